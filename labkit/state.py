"""Per-lab run state under /run/labkit: the lock that serializes commands on one lab, and the
state file that lets status and down work without the topology file."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

from .errors import HostError
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
        private_dir(RUN_DIR, 0o755)
        while True:
            self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
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
    private_dir(RUN_DIR, 0o755)
    fd = os.open(RUN_DIR / "names.lock", os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
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
    private_dir(RUN_DIR, 0o755)
    fd = os.open(GENERATION, os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        value = int(os.pread(fd, 32, 0) or b"0")
        os.pwrite(fd, f"{value + 1:<20d}".encode(), 0)
    finally:
        os.close(fd)


def lab_dir(lab: str) -> Path:
    return RUN_DIR / lab


# --------------------------------------------------------------------------- files only root writes
#
# Everything under /run/labkit is root's: labkit runs as root and reads back what it wrote (the
# memo, the effective state, DHCP configurations). A directory is created with its mode set
# explicitly (the umask never widens it) and refused when it is a symlink, another user's, or
# writable by others; a file is written under a random name with O_EXCL|O_NOFOLLOW and renamed
# into place, and read with O_NOFOLLOW and refused unless it is a regular file of root's, 0600.


def private_dir(path: Path, mode: int = 0o700) -> Path:
    """`path` as a directory of root's own (created with `mode`); raises HostError otherwise."""
    if path.parent == RUN_DIR:
        private_dir(RUN_DIR, 0o755)
    elif RUN_DIR in path.parent.parents:
        private_dir(path.parent, mode)
    elif path != RUN_DIR:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(path, mode)
        os.chmod(path, mode)  # mkdir's mode passes through the umask
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise HostError(f"{path} is not labkit's own directory (a symlink, another user's, or writable by others); "
                        f"remove it (rm -r {path}) and run the command again")
    return path


def own_lab_dir(lab: str) -> Path:
    return private_dir(lab_dir(lab))


def write_private(path: Path, data: bytes | str) -> None:
    """Write `path` (0600) whole or not at all: a fresh file, renamed over the old one."""
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data.encode() if isinstance(data, str) else data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_private(path: Path) -> bytes | None:
    """`path`'s bytes if it is a regular file of root's that no one else may read or write; None
    when it is missing or is not such a file (a symlink planted in its place, say)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:  # missing, a symlink (ELOOP), unreadable
        return None
    with os.fdopen(fd, "rb") as src:
        st = os.fstat(src.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
            return None
        return src.read()


def append_private(path: Path, text: str, sync: bool = False) -> None:
    """Append to `path` (0600), never through a symlink."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "a") as out:
        out.write(text)
        out.flush()
        if sync:
            os.fsync(out.fileno())


FAULTS = "faults.json"  # lab.break's record: the scenarios applied since the lab was last brought up


def save(lab: str, record: dict, name: str = "state.json") -> None:
    write_private(own_lab_dir(lab) / name, json.dumps(record, indent=1, sort_keys=True) + "\n")


def load(lab: str, name: str = "state.json") -> dict:
    """A JSON record of the lab's state ({} when there is none)."""
    data = read_private(lab_dir(lab) / name)
    return json.loads(data) if data else {}


# --------------------------------------------------------------------------- the effective state
#
# What the lab is now, as its last change (lab.up, acli, manage-ovs, the API) left it: the
# effective topology, the IPAM ledger (ledger.py) and the control plane's logical timestamps
# (the records' ETags). The three are one state: written together into a new directory that a
# symlink is then turned to (one rename), and read together from the directory the symlink named
# when the reader looked.

EFFECTIVE = "effective"


@dataclass(frozen=True)
class Effective:
    topology: bytes  # YAML, as topology.load reads it; MACs pinned, only requested addresses
    ledger: bytes  # ledger.Ledger's JSON
    stamps: bytes  # {"vm:NAME": n, "net:NAME": n}, JSON


def read_effective(lab: str) -> Effective | None:
    base = lab_dir(lab)
    try:
        folder = base / os.readlink(base / EFFECTIVE)
    except OSError:
        return None
    parts = [read_private(folder / name) for name in ("topology.yaml", "ipam.json", "control.json")]
    if parts[0] is None:
        return None
    return Effective(parts[0], parts[1] or b'{"version": 1, "bindings": []}', parts[2] or b"{}")


def save_effective(lab: str, state: Effective) -> None:
    base = own_lab_dir(lab)
    name = f"{EFFECTIVE}.{secrets.token_hex(6)}"
    folder = private_dir(base / name)
    for file, data in (("topology.yaml", state.topology), ("ipam.json", state.ledger), ("control.json", state.stamps)):
        write_private(folder / file, data)
    link = base / f".{EFFECTIVE}.{secrets.token_hex(6)}"
    os.symlink(name, link)
    os.replace(link, base / EFFECTIVE)
    # Keep the one before too: a reader that resolved the link just before it turned still finds it.
    keep = {name, os.path.basename(os.readlink(base / EFFECTIVE))}
    older = sorted((p for p in base.glob(f"{EFFECTIVE}.*") if p.name not in keep), key=lambda p: p.stat().st_mtime)
    for old in older[:-1]:
        shutil.rmtree(old, ignore_errors=True)


def topology_file(lab: str) -> Path:
    """The lab's effective topology, through the symlink: always the newest whole one."""
    return lab_dir(lab) / EFFECTIVE / "topology.yaml"


def topology_yaml(lab: str, topo) -> str:
    """The effective topology as text (image paths absolute, as validated), re-read by later commands."""
    import yaml

    text = "# lab " + lab + ": effective topology, written by labkit (lab.up, acli, manage-ovs)\n"
    return text + yaml.safe_dump(_int_keys(topo.model_dump(mode="json", exclude_defaults=True)), sort_keys=False)


def record_intent(lab: str, pairs: list[tuple[str, str, str | None]]) -> None:
    """Write-ahead: the veth pairs (peer, name, netns) apply is about to create. A pair is marked as
    the lab's right after it exists; if labkit is killed in between, this names it the lab's."""
    append_private(own_lab_dir(lab) / "intents", "".join(f"{peer} {name} {netns or '-'}\n" for peer, name, netns in pairs),
                   sync=True)


def prune_intents(lab: str, pairs: list[tuple[str, str, str | None]]) -> None:
    """Forget intents whose links now carry the lab's mark: an intent only stands for a creation
    that may have been interrupted (a pair half-made, unmarked), never for a name for good."""
    done = {(peer, name, netns) for peer, name, netns in pairs}
    left = [pair for pair in intents(lab) if pair not in done]
    path = lab_dir(lab) / "intents"
    if not path.exists():
        return
    write_private(path, "".join(f"{peer} {name} {netns or '-'}\n" for peer, name, netns in left))


def intents(lab: str) -> list[tuple[str, str, str | None]]:
    lines = (read_private(lab_dir(lab) / "intents") or b"").decode().splitlines()
    return [(peer, name, None if netns == "-" else netns) for peer, name, netns in (l.split() for l in lines if l)]


def _int_keys(data, key=None):
    """JSON mode turns the VLAN keys of switch.gateways and a NIC's ips into strings; the topology
    wants ints there (and only there: an uplink or bridge may be named 1234)."""
    if isinstance(data, dict):
        return {int(k) if key in ("gateways", "ips") and isinstance(k, str) and k.isdigit() else k: _int_keys(v, k)
                for k, v in data.items()}
    if isinstance(data, list):
        return [_int_keys(v) for v in data]
    return data


def forget(lab: str) -> None:
    """Remove the lab's files: run state, the guests' serial logs, the overlays and seeds of its disks."""
    for path in (lab_dir(lab), LOG_DIR / lab, DISK_DIR / lab):
        shutil.rmtree(path, ignore_errors=True)
