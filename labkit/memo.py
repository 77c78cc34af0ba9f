"""The lab last decided, remembered: a lab.up with nothing to do skips parse, validate, IPAM,
resolve and render (pydantic and jinja2 are most of its time) when nothing they read changed.

Those stages are pure. What they read is `Inputs`, read once, under the lab's lock: the exact
bytes of the topology file, the profile, the lab's effective state (previous topology and IPAM
ledger) and labkit's own code and templates; the key is a hash of those bytes (content, never
sizes or times: `rsync -a` keeps both). The host facts resolve consulted and the adaptation
preflight chose are compared by the pipeline after observing. A decision is stored only when the
file and the code are still what was read at the start (an edit made meanwhile is decided by the
next lab.up, not hidden under the old decision).

Kept as JSON (codec.py: reading it runs nothing) in /run/labkit/<lab>/decided.json, root's own
and 0600 (state.write_private / read_private); a memo that fails any check is ignored and
decided again. lab.down removes it with the lab's other state.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from . import codec, state
from .desired import Desired
from .model import HostFacts
from .paths import PACKAGE, TEMPLATE_DIR

_CODE_SUFFIXES = (".py", ".yaml", ".xml", ".j2", ".rng")
MEMO = "decided.json"
_NAME_LINE = re.compile(rb"^name:[ \t]*([\"']?)([a-z][a-z0-9-]{0,11})\1[ \t]*(?:#.*)?$", re.MULTILINE)


@dataclass(frozen=True)
class Inputs:
    """What a lab's decision is made from, as read once."""

    lab: str
    source: str | None  # the topology file; None: the embedded default
    text: bytes  # its bytes, as read
    profile: str | None
    effective: state.Effective | None  # the lab's effective state, as read
    code: str  # digest of labkit's code and templates

    @property
    def key(self) -> str:
        digest = hashlib.sha256()
        path = str(Path(self.source).resolve()) if self.source else "<default>"
        effective = self.effective
        for part in (f"{path}\0{self.profile}".encode(), self.text, effective.topology if effective else b"",
                     effective.ledger if effective else b"", self.code.encode()):
            digest.update(hashlib.sha256(part).digest())
        return digest.hexdigest()


def source_bytes(source: str | None) -> bytes:
    """The topology file's bytes (the embedded default's for None); raises OSError like open()."""
    return Path(source).read_bytes() if source else (PACKAGE / "default.yaml").read_bytes()


def lab_name_in(text: bytes) -> str | None:
    """The lab's name from a top-level `name: NAME` line, without parsing the file (which imports
    pydantic): enough to lock the right lab; the decision is checked against it under the lock."""
    found = _NAME_LINE.findall(text)
    return found[0][1].decode() if len(found) == 1 else None


def read(lab: str, source: str | None, profile: str | None) -> Inputs:
    return Inputs(lab, source, source_bytes(source), profile, state.read_effective(lab), code_digest())


def code_digest() -> str:
    """labkit's code and templates, by content: any edit, any upgrade."""
    digest = hashlib.sha256(sys.version.encode())
    for path in sorted(p for root in (PACKAGE, TEMPLATE_DIR) for p in root.rglob("*") if p.suffix in _CODE_SUFFIXES):
        digest.update(f"\0{path}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class Remembered:
    """A decision and what it was decided from on the host."""

    key: str  # Inputs.key
    facts: HostFacts  # what resolve read of the host
    desired: Desired  # the lab, the adaptation it was rendered for, its documents


def recall(inputs: Inputs) -> Remembered | None:
    """What was decided from these very inputs, if anything was (and the file passes every check)."""
    data = state.read_private(state.lab_dir(inputs.lab) / MEMO)
    if data is None:
        return None
    try:
        raw = json.loads(data)
        if raw.get("key") != inputs.key:
            return None
        remembered = codec.decode(Remembered, raw)
    except (ValueError, TypeError, KeyError, AttributeError):  # not ours, or labkit's classes changed
        return None
    return remembered if remembered.desired.lab.name == inputs.lab else None


def remember(inputs: Inputs, facts: HostFacts, desired: Desired) -> bool:
    """Keep the decision just applied under the inputs as they stand now (the effective state the
    caller has just saved), if the file and the code are still those it was decided from."""
    try:
        now = read(inputs.lab, inputs.source, inputs.profile)
    except OSError:
        return False
    if now.code != inputs.code or (now.text != inputs.text and inputs.source != str(state.topology_file(inputs.lab))):
        return False
    data = json.dumps(codec.encode(Remembered(now.key, facts, desired)), separators=(",", ":"))
    state.write_private(state.own_lab_dir(inputs.lab) / MEMO, data)
    return True
