"""Per-lab run state under /run/labkit: the lock that serializes commands on one lab, and the
state file that lets status and down work without the topology file."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import threading
from pathlib import Path

from .paths import DISK_DIR, LOG_DIR, RUN_DIR


class LabLock:
    """flock on /run/labkit/<lab>.lock; different labs never wait for each other. Reentrant within
    a thread (acli holds the lock across its read-change-apply; lab.up inside takes it again)."""

    _local = threading.local()  # .held: lab -> depth, in this thread

    def __init__(self, lab: str, say=print):
        self.path = RUN_DIR / f"{lab}.lock"
        self.lab, self.say, self.fd = lab, say, -1

    @property
    def _held(self) -> dict[str, int]:
        if not hasattr(self._local, "held"):
            self._local.held = {}
        return self._local.held

    def __enter__(self) -> "LabLock":
        if self._held.get(self.lab):
            self._held[self.lab] += 1
            return self
        self._take()
        self._held[self.lab] = 1
        return self

    def _take(self) -> None:
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        while True:
            self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.say(f"waiting for another labkit command on lab {self.lab} to finish")
                fcntl.flock(self.fd, fcntl.LOCK_EX)
            # The holder before us may have removed the file (lab.down): lock the new one instead.
            with contextlib.suppress(FileNotFoundError):
                if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                    return
            os.close(self.fd)

    def __exit__(self, *exc) -> None:
        self._held[self.lab] -= 1
        if self._held[self.lab]:
            return
        del self._held[self.lab]
        if not lab_dir(self.lab).exists():  # lab down, or never built: leave no file behind
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        os.close(self.fd)


@contextlib.contextmanager
def names_lock(say=print):
    """Host-wide: one lab.up at a time goes from observing the host to creating its objects. Names
    are chosen from what the host holds when observed; two labs doing that at once could both choose
    br0. Held for the apply only, not while the guests boot."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    fd = os.open(RUN_DIR / "names.lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say("waiting for another lab's lab.up to create its objects (names are chosen one lab at a time)")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


GENERATION = RUN_DIR / "generation"


def generation() -> int:
    """How many times labkit commands have changed this host (see bump_generation)."""
    try:
        return int(GENERATION.read_text() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def bump_generation() -> None:
    """Count a change to the host: a reading of the host taken before it (host/observe.py) is stale."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    fd = os.open(GENERATION, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        value = int(os.pread(fd, 32, 0) or b"0")
        os.pwrite(fd, f"{value + 1:<20d}".encode(), 0)
    finally:
        os.close(fd)


def lab_dir(lab: str) -> Path:
    return RUN_DIR / lab


def save(lab: str, record: dict, name: str = "state.json") -> None:
    path = lab_dir(lab) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def load(lab: str, name: str = "state.json") -> dict:
    """A JSON record of the lab's state ({} when there is none)."""
    try:
        return json.loads((lab_dir(lab) / name).read_text())
    except FileNotFoundError:
        return {}


def topology_file(lab: str) -> Path:
    return lab_dir(lab) / "topology.yaml"


def save_topology(lab: str, topo) -> None:
    """The lab's effective topology, as validated (image paths absolute), re-read by later commands."""
    import yaml

    path = topology_file(lab)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "# lab " + lab + ": effective topology, written by labkit (lab.up, manage-ovs)\n"
    text += yaml.safe_dump(_int_keys(topo.model_dump(mode="json", exclude_defaults=True)), sort_keys=False)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def record_intent(lab: str, pairs: list[tuple[str, str, str | None]]) -> None:
    """Write-ahead: the veth pairs (peer, name, netns) apply is about to create. A pair is marked as
    the lab's right after it exists; if labkit is killed in between, this names it the lab's."""
    path = lab_dir(lab) / "intents"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as out:
        out.writelines(f"{peer} {name} {netns or '-'}\n" for peer, name, netns in pairs)
        out.flush()
        os.fsync(out.fileno())


def prune_intents(lab: str, pairs: list[tuple[str, str, str | None]]) -> None:
    """Forget intents whose links now carry the lab's mark: an intent only stands for a creation
    that may have been interrupted (a pair half-made, unmarked), never for a name for good."""
    done = {(peer, name, netns) for peer, name, netns in pairs}
    left = [pair for pair in intents(lab) if pair not in done]
    path = lab_dir(lab) / "intents"
    if not path.exists():
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(f"{peer} {name} {netns or '-'}\n" for peer, name, netns in left))
    os.replace(tmp, path)


def intents(lab: str) -> list[tuple[str, str, str | None]]:
    try:
        lines = (lab_dir(lab) / "intents").read_text().splitlines()
    except FileNotFoundError:
        return []
    return [(peer, name, None if netns == "-" else netns) for peer, name, netns in (l.split() for l in lines if l)]


def _int_keys(data):
    """JSON mode turns the VLAN keys of gateways and ips into strings; the topology wants ints."""
    if isinstance(data, dict):
        return {int(k) if isinstance(k, str) and k.isdigit() else k: _int_keys(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_int_keys(v) for v in data]
    return data


def forget(lab: str) -> None:
    """Remove the lab's files: run state, the guests' serial logs, the overlays and seeds of its disks."""
    for path in (lab_dir(lab), LOG_DIR / lab, DISK_DIR / lab):
        shutil.rmtree(path, ignore_errors=True)
