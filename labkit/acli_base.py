"""acli's building blocks (no I/O): a command's declaration, its output, the parsing of its
values and AHV's output forms (tables, protobuf text). acli.py holds the commands and runs them;
acli_storage.py and acli_hosts.py hold the commands of disks and images, and of hosts."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Callable, Protocol

from .control import Change
from .errors import LabkitError
from .values import echo


class AcliError(LabkitError):
    """A command line acli cannot run: nothing was changed."""


class Session(Protocol):
    def controlled(self):  # a context manager yielding the lab's Control, under its lock
        ...

    def apply(self, change: Change) -> None:
        ...

    def act(self, action: "HostAction") -> None:  # a power action on running guests (no change of the topology)
        ...

    def probe(self, path: str, what: str):  # an image file's control_storage.ImageFacts
        ...


@dataclass(frozen=True)
class HostAction:
    """What acli does to running guests besides the lab's topology: `verb` (shutdown, reboot, reset,
    power_cycle, pause, resume) on `vms` (AHV names); `then`: the change that follows (a shutdown
    records the VMs powered off)."""

    verb: str
    vms: tuple[str, ...]
    operation: str
    then: Change | None = None


@dataclass(frozen=True)
class Command:
    name: str
    positional: tuple[str, ...]  # what the positional arguments are: "net", "vm", "mac", "name", "host"
    keywords: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    run: Callable = None
    help: str = ""
    confirm: bool = False  # asks before it deletes (-y skips, as acli's)
    # keywords AHV's acli has that this lab does not model: accepted, and a note says so
    unmodelled: tuple[str, ...] = ()
    session: bool = False  # `run` takes the session too (image.create probes its file through it)


@dataclass
class Output:
    text: list[str] = field(default_factory=list)
    data: object = None


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Call:
    command: Command
    args: tuple[str, ...]
    kw: dict
    notes: tuple[str, ...] = ()  # keywords accepted and not modelled


MAX_LINE = 4096


def _usage(command: Command) -> str:
    return " ".join(["usage:", command.name, *(p.upper() for p in command.positional), _keywords_usage(command)]).rstrip()


def _keywords_usage(command: Command) -> str:
    return " ".join(f"{k}=" if k in command.required else f"[{k}=]" for k in command.keywords)


def _int(kw: dict, key: str, low: int, high: int) -> int | None:
    if key not in kw:
        return None
    if not re.fullmatch(r"\d{1,9}", kw[key]) or not low <= int(kw[key]) <= high:  # bounded before int()
        raise AcliError(f"{key}={echo(kw[key])} is not a number from {low} to {high}")
    return int(kw[key])


def _bool(kw: dict, key: str) -> bool:
    value = kw.get(key, "false").lower()
    if value not in ("true", "false"):
        raise AcliError(f"{key}={echo(kw[key])} is not true or false")
    return value == "true"


def _memory(text: str | None) -> int | None:
    """acli's sizes (4G, 512M; a bare number is MiB) in MiB."""
    if text is None:
        return None
    match = re.fullmatch(r"(\d{1,9})\s*([MG])?(i?B)?", text, re.IGNORECASE)  # bounded before int()
    if not match:
        raise AcliError(f"memory={echo(text)} is not a size; write it like 128M or 2G")
    mib = int(match.group(1)) * (1024 if (match.group(2) or "M").upper() == "G" else 1)
    if not 16 <= mib <= 1024 * 1024:
        raise AcliError(f"memory={echo(text)} is out of range; give 16M to 1024G")
    return mib


def _vlans(text: str) -> list[int]:
    if not re.fullmatch(r"\d{1,4}(,\d{1,4})*,?", text):
        raise AcliError(f"trunked_networks={echo(text)} is not a list of VLAN ids; write it like 10,20,30")
    vlans = sorted({int(v) for v in text.split(",") if v})
    if not vlans or not all(1 <= v <= 4094 for v in vlans):
        raise AcliError(f"trunked_networks={echo(text)} must list VLAN ids from 1 to 4094")
    return vlans


def _vlan_mode(kw: dict) -> str | None:
    mode = kw.get("vlan_mode")
    if mode is not None and mode not in ("kAccess", "kTrunked"):
        raise AcliError(f"vlan_mode={echo(mode)} is not kAccess or kTrunked")
    return mode


# --------------------------------------------------------------------------- output


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows]]


def proto(name: str, fields: dict, indent: int = 0) -> list[str]:
    """Protobuf text, as acli's `get` prints it: keys sorted, strings quoted, lists repeated, blocks nested."""
    pad = "  " * indent
    out = [f"{pad}{name} {{"]
    for key in sorted(fields):
        value = fields[key]
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict):
                out += proto(key, item, indent + 1)
            elif isinstance(item, bool):
                out.append(f"{pad}  {key}: {'true' if item else 'false'}")
            elif isinstance(item, int):
                out.append(f"{pad}  {key}: {item}")
            elif item is not None:
                out.append(f"{pad}  {key}: {json.dumps(str(item))}")
    out.append(f"{pad}}}")
    return out
