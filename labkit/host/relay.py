"""Relay adapter: the process that answers `acli` typed in a lab's CVMs (labkit/acli_relay.py).

One per lab, started by lab.up and stopped by lab.down like the lab's dnsmasq: a Python process
of labkit's own (`python -m labkit.acli_relay --lab L`), in its own session so that it outlives
the command that started it, logging to /var/log/labkit/<lab>/acli-relay.log. It writes its pid
file itself (paths.relay_pidfile: "PID VERSION") once it is ready; observe finds it there, and
trusts a pid only if that process's command line is the lab's relay (a reused pid is not).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .. import state
from ..errors import HostError
from ..hoststate import SeenRelay
from ..paths import LOG_DIR, RUN_DIR, relay_pidfile

MODULE = "labkit.acli_relay"
READY_SECONDS = 20.0  # a fresh Python imports labkit's acli before it says it is ready
STOP_SECONDS = 5.0


def command(lab: str) -> list[str]:
    return [sys.executable, "-m", MODULE, "--lab", lab]


def observe() -> tuple[SeenRelay, ...]:
    """Every lab's relay, from the pid files under /run/labkit."""
    seen = []
    for pidfile in sorted(RUN_DIR.glob(f"*/{relay_pidfile('x').name}")):
        lab = pidfile.parent.name
        pid, version = _read(pidfile)
        seen.append(SeenRelay(lab, pid is not None and _ours(pid, lab), version))
    return tuple(seen)


def start(lab: str, version: str) -> None:
    """Start the lab's relay (a running one is stopped first) and wait until it says it is ready."""
    spawn(lab, version).wait()


def spawn(lab: str, version: str) -> "Starting":
    """Start the lab's relay (a running one is stopped first); Starting.wait() until it is ready
    (a fresh Python's imports take a few tenths of a second: lab.up builds the rest meanwhile)."""
    stop(lab)
    log_dir = LOG_DIR / lab
    log_dir.mkdir(parents=True, exist_ok=True)  # the guests' serial logs are there too (libvirt's to write)
    state.private_dir(RUN_DIR / lab)  # where it writes its pid file
    log = os.open(log_dir / "acli-relay.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        # its own session: lab.up ends, the relay stays; the package is found from where labkit is
        child = subprocess.Popen(command(lab), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                 start_new_session=True, cwd=str(Path(__file__).resolve().parents[2]))
    finally:
        os.close(log)
    return Starting(lab, version, child, time.monotonic() + READY_SECONDS)


class Starting:
    def __init__(self, lab: str, version: str, child: subprocess.Popen, deadline: float):
        self.lab, self.version, self.child, self.deadline = lab, version, child, deadline

    def wait(self) -> None:
        log = LOG_DIR / self.lab / "acli-relay.log"
        while True:
            pid, running_version = _read(relay_pidfile(self.lab))
            if pid == self.child.pid and running_version == self.version:
                return
            if self.child.poll() is not None:
                raise HostError(f"the acli relay of lab {self.lab} exited at start ({self.child.returncode}); see {log}")
            if time.monotonic() > self.deadline:
                self.child.kill()
                raise HostError(f"the acli relay of lab {self.lab} did not get ready within {READY_SECONDS:.0f} s; "
                                f"see {log}")
            time.sleep(0.02)


def stop(lab: str) -> None:
    """Stop the lab's relay, if it is the lab's: SIGTERM, then SIGKILL; its pid file goes."""
    pidfile = relay_pidfile(lab)
    pid, _ = _read(pidfile)
    if pid is not None and _ours(pid, lab):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            deadline = time.monotonic() + STOP_SECONDS
            while _ours(pid, lab) and time.monotonic() < deadline:
                time.sleep(0.01)
            if not _ours(pid, lab):
                break
        else:
            raise HostError(f"the acli relay {pid} of lab {lab} survives SIGKILL; see `ps -o stat,cmd -p {pid}`")
    pidfile.unlink(missing_ok=True)


def _read(pidfile: Path) -> tuple[int | None, str]:
    try:
        pid, version = (state.read_private(pidfile) or b"").decode().split()
        return int(pid), version
    except (ValueError, UnicodeDecodeError):
        return None, ""


def _ours(pid: int, lab: str) -> bool:
    """Whether `pid` is lab's relay and alive (not a zombie, not a reused pid)."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return status != "Z" and cmdline[-5:] == [b"-m", MODULE.encode(), b"--lab", lab.encode(), b""]
