"""The lab last decided from a topology file, remembered: a lab.up with nothing to do skips
parse, validate, resolve and render (pydantic and jinja2 are most of its time) when nothing those
stages read has changed.

Those stages are pure. What they read: the topology file, the profile, the lab's effective
topology (IPAM's bindings), labkit's own code and templates (the key, checked before the lab is
locked), the host facts resolve consults and the adaptation preflight decides (compared by
pipeline.up after observing: anything different there and the lab is decided again). Observe,
preflight and plan run every time, so a no-op is still checked against the host as it is.

Kept as /run/labkit/<lab>/decided-<source digest>.pickle, root's own (pickle runs code: a file
anyone else could have written is ignored), and removed with the lab's other state by lab.down.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import state
from .paths import PACKAGE, RUN_DIR, TEMPLATE_DIR

if TYPE_CHECKING:
    from .model import HostFacts
    from .pipeline import Desired

_CODE_SUFFIXES = (".py", ".yaml", ".xml", ".j2", ".rng")


@dataclass(frozen=True)
class Remembered:
    """A decision and what it was decided from on the host."""

    key: str  # source, profile, effective topology, code
    facts: HostFacts  # what resolve read of the host
    desired: Desired  # the lab, the adaptation it was rendered for, its documents


def _source_id(source: str | None, profile: str | None) -> str:
    path = str(Path(source).resolve()) if source else "<default>"
    return hashlib.sha256(f"{path}\0{profile}".encode()).hexdigest()[:20]


def _code() -> bytes:
    """labkit's code and templates as names, sizes and modification times: any edit, any upgrade."""
    files = {p for root in (PACKAGE, TEMPLATE_DIR) for p in root.rglob("*") if p.suffix in _CODE_SUFFIXES}
    seen = sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return repr((sys.version, seen)).encode()


def _bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b"<none>"


def key(source: str | None, profile: str | None, lab: str) -> str:
    digest = hashlib.sha256()
    for part in (_source_id(source, profile).encode(), _bytes(Path(source) if source else PACKAGE / "default.yaml"),
                 _bytes(state.topology_file(lab)), _code()):
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()


def recall(source: str | None, profile: str | None) -> Remembered | None:
    """What was decided from `source` with `profile`, if its inputs other than the host are unchanged."""
    pattern = f"*/decided-{_source_id(source, profile)}.pickle"
    for path in RUN_DIR.glob(pattern):
        try:
            st = path.stat()
            if st.st_uid != 0 or st.st_mode & 0o022 or path.parent.stat().st_uid != 0:
                continue
            remembered = pickle.loads(path.read_bytes())
        except Exception:  # noqa: BLE001 - unreadable, or labkit's classes changed: decide again
            continue
        if isinstance(remembered, Remembered) and remembered.key == key(source, profile, path.parent.name):
            return remembered
    return None


def remember(source: str | None, profile: str | None, facts: HostFacts, desired: Desired) -> None:
    """Keep the decision lab.up just applied (after the lab's state and effective topology are saved)."""
    lab = desired.lab.name
    folder = state.lab_dir(lab)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"decided-{_source_id(source, profile)}.pickle"
    for old in folder.glob("decided-*.pickle"):  # one decision per lab: the one it runs
        if old.name != name:
            old.unlink(missing_ok=True)
    data = pickle.dumps(Remembered(key(source, profile, lab), facts, desired))
    tmp = folder / f".{name}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, folder / name)

