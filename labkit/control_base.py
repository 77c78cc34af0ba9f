"""What every change of the control plane shares (pure): its error, and the checking of the
values a change takes (control.py, control_storage.py, control_hosts.py)."""

from __future__ import annotations

import ipaddress

from .errors import LabkitError
from .topology import Topology
from .values import echo, shown


class ControlError(LabkitError):
    """A change the control plane refuses; nothing was changed."""


def _validated(verb: str, topo: Topology) -> Topology:
    """`topo` checked field by field as a topology file is (model_copy checks nothing): a value
    that would reach another program unchecked is refused here, for every client alike."""
    from pydantic import ValidationError

    try:
        return Topology.model_validate(topo.model_dump())
    except ValidationError as exc:
        raise ControlError(f"{verb}: {_sentence(exc.errors()[0])}") from None


def _build(cls, **fields):
    """A topology object from acli's values; pydantic's complaint, if any, as one sentence."""
    from pydantic import ValidationError

    try:
        return cls(**fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(p) for p in error["loc"])
        raise ControlError(f"{key}: {_sentence(error)}") from None


def _sentence(error: dict) -> str:
    """A pydantic error as labkit words it: our validators' own sentence (it quotes the value),
    else pydantic's, with the value shown cut to a readable length."""
    if error["msg"].startswith("Value error, "):
        return error["msg"].removeprefix("Value error, ")
    return f"{shown(error.get('input'))} is not accepted: {error['msg'][0].lower()}{error['msg'][1:]}"


def _address(text: str, key: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        raise ControlError(f"{key}={echo(text)} is not an IPv4 address; write it like 10.50.0.100") from None


def _interface(text: str, key: str) -> ipaddress.IPv4Interface:
    try:
        iface = ipaddress.IPv4Interface(text)
    except ValueError:
        iface = None
    if iface is None or "/" not in text or iface.ip in (iface.network.network_address, iface.network.broadcast_address):
        raise ControlError(f"{key}={echo(text)} is not a gateway with a prefix; write it like 10.50.0.1/24")
    return iface


def _mac(text: str) -> str:
    mac = text.lower().replace("-", ":")
    if len(mac.split(":")) != 6 or not all(len(p) == 2 and all(c in "0123456789abcdef" for c in p) for p in mac.split(":")):
        raise ControlError(f"mac={echo(text)} is not a MAC address; write it like 50:6b:8d:00:00:01")
    return mac
