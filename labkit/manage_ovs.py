"""manage_ovs, as AHV's CVM has it (shared/reference/ahv-formats.md section 3), on a running lab.

`update_uplinks` edits the lab's effective topology (pure: `update_uplinks`),
which then goes through the same plan/apply path as lab.up; `show_uplinks`
and `show_interfaces` print what OVS and the links really hold, in AHV's
format.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import LabkitError
from .topology import Bond, Bridge, Topology

SPEEDS_MBPS = {"1g": 1000, "10g": 10000, "25g": 25000, "40g": 40000, "100g": 100000}


@dataclass(frozen=True)
class UplinkRequest:
    """update_uplinks' flags; None means the flag was not given."""

    bridge_name: str = "br0"
    bond_name: str | None = None
    interfaces: str = ""
    bond_mode: str | None = None
    lacp_mode: str | None = None
    lacp_fallback: str | None = None
    mtu: int | None = None


def update_uplinks(topo: Topology, node_name: str, req: UplinkRequest) -> Topology:
    """The topology after update_uplinks: the bridge's bond is deleted and made anew from the flags,
    as AHV does (an omitted --bond_mode reverts to active-backup). Validation happens on reload."""
    node = next((n for n in topo.nodes if n.name == node_name), None)
    if node is None:
        raise LabkitError(f"lab {topo.name} has no node {node_name!r}; its nodes: {', '.join(n.name for n in topo.nodes)}")
    bridge = node.bridges.get(req.bridge_name)
    if bridge is None:
        raise LabkitError(f"node {node_name} has no bridge {req.bridge_name}; its bridges: {', '.join(node.bridges)}")
    members = _interfaces(node.uplinks, req.interfaces)
    mode = req.bond_mode or "active-backup"
    if mode not in ("active-backup", "balance-slb", "balance-tcp"):
        raise LabkitError(f"--bond_mode {mode} is not a bond mode; use active-backup, balance-slb or balance-tcp")
    if req.lacp_mode not in (None, "fast", "slow"):
        raise LabkitError(f"--lacp_mode {req.lacp_mode} is not valid; use fast or slow")
    if req.lacp_fallback not in (None, "true", "false"):
        raise LabkitError(f"--lacp_fallback {req.lacp_fallback} is not valid; use true or false")
    lacp = mode == "balance-tcp"
    old = bridge.bond
    name = req.bond_name or (old.name if old else f"{req.bridge_name}-up")  # new bonds: <bridge>-up, as current AHV
    bond = Bond(name=name, interfaces=members, mode=mode, lacp="active" if lacp else "off",
                lacp_time=(req.lacp_mode or "slow") if lacp else "slow",
                lacp_fallback=lacp and req.lacp_fallback == "true")
    # Uplinks taken from another bridge's bond leave it, as they would on AHV.
    bridges = {}
    for bname, other in node.bridges.items():
        if bname == req.bridge_name:
            bridges[bname] = Bridge(bond=bond, mtu=req.mtu or other.mtu)
        elif other.bond and set(other.bond.interfaces) & set(members):
            rest = [m for m in other.bond.interfaces if m not in members]
            bridges[bname] = other.model_copy(update={"bond": other.bond.model_copy(update={"interfaces": rest}) if rest else None})
        else:
            bridges[bname] = other
    nodes = [n.model_copy(update={"bridges": bridges}) if n.name == node_name else n for n in topo.nodes]
    return topo.model_copy(update={"nodes": nodes})


def _interfaces(uplinks: dict[str, str], spec: str) -> list[str]:
    if not spec:
        raise LabkitError("update_uplinks needs --interfaces: 10g, 1g, or a list such as eth2,eth3")
    if spec in SPEEDS_MBPS:
        chosen = sorted(name for name, speed in uplinks.items() if speed == spec)
        if not chosen:
            raise LabkitError(f"no {spec} uplinks on this node; its uplinks: "
                              + ", ".join(f"{n} ({s})" for n, s in uplinks.items()))
        return chosen
    chosen = [name.strip() for name in spec.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in uplinks]
    if unknown:
        raise LabkitError(f"{', '.join(unknown)}: not an uplink of this node; its uplinks: {', '.join(uplinks)}")
    return chosen


@dataclass(frozen=True)
class BondState:
    bridge: str
    bond: str
    mode: str
    interfaces: tuple[str, ...]
    lacp: str
    lacp_fallback: bool
    lacp_time: str


def format_uplinks(bonds: list[BondState]) -> str:
    """show_uplinks, in the format of current AHV (ahv-formats.md: manage_ovs show_uplinks)."""
    lines = []
    for b in bonds:
        lines += [f"Bridge: {b.bridge}", f"  Bond: {b.bond}", f"    bond_mode: {b.mode}",
                  f"    interfaces: {' '.join(b.interfaces)}", f"    lacp: {b.lacp}",
                  f"    lacp-fallback: {str(b.lacp_fallback).lower()}", f"    lacp_speed: {b.lacp_time}"]
    return "\n".join(lines)


def format_interfaces(rows: list[tuple[str, str, bool]]) -> str:
    """show_interfaces: name, mode (speed in Mb/s), link, speed (0 when the link is down)."""
    out = [f"{'name':<4} {'mode':>5} {'link':<5}{'speed':>5}"]  # as AHV prints it: "eth2 10000 True 10000"
    for name, speed, link in rows:
        mbps = SPEEDS_MBPS[speed]
        out.append(f"{name:<4} {mbps:>5} {str(link):<5}{mbps if link else 0:>5}")
    return "\n".join(out)
