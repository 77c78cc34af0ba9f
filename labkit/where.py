"""The places of a lab a user names for lab.capture and lab.impair, as interfaces on the host.

    NODE/eth2      an uplink, the node's side (802.1Q tags as the node sends them)
    NODE/br0-up    a bond: all its members
    NODE/br0       the node's host port (the AHV host's own traffic, untagged, in the node's namespace)
    NODE/virbr0    the node's end of NTNX-Local-Network (192.168.5.1)
    VM, VM/N       a VM's first or N-th NIC (from 0), its tap; `cvm/1` is the CVM's eth1
    tor/PORT       a port of the top-of-rack switch (tor-b/PORT: the pair's second switch)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import LabkitError
from .model import Lab
from .values import shown


@dataclass(frozen=True)
class Tap:
    """The interfaces a place names, in one namespace (None: the workstation's)."""

    label: str
    netns: str | None
    ifnames: tuple[str, ...]
    tagged: bool  # frames carry their VLAN tags (a trunk): --vlan N selects one VLAN


def locate(lab: Lab, where: str, taps: dict[str, tuple[str, ...]]) -> Tap:
    """The interfaces `where` names; `taps`: each running domain's tap names, in NIC order."""
    head, _, tail = where.partition("/")
    if head in lab.node_names and tail:
        return _on_node(lab, head, tail, where)
    switch = {"tor": _tor(lab, 0), "tor-b": _tor(lab, 1)}.get(head)
    if switch is not None and tail:
        ports = [p.name for p in switch.ports]
        if tail not in ports:
            raise LabkitError(f"switch {head} of lab {lab.name} has no port {shown(tail)}; its ports: {', '.join(ports)}")
        return Tap(where, None, (tail,), True)
    return _on_vm(lab, head, tail, where, taps)


def _tor(lab: Lab, index: int):
    switches = [b for b in lab.bridges if b.role == "tor"]
    return switches[index] if index < len(switches) else None


def _on_node(lab: Lab, node: str, iface: str, where: str) -> Tap:
    uplinks = lab.uplinks(node)
    if iface in uplinks:
        return Tap(where, None, (uplinks[iface].peer,), True)
    for bridge in (b for b in lab.bridges if b.role == "node" and b.node == node):
        for port in bridge.ports:
            if port.bond_mode is not None and _bond_name(port) == iface:
                return Tap(where, None, tuple(i.name for i in port.interfaces), True)
    host = next((v for v in lab.veths if v.purpose == "host" and v.netns and _node_of(lab, v.netns) == node), None)
    local = next((v for v in lab.veths if v.purpose == "local" and v.netns and _node_of(lab, v.netns) == node), None)
    if host is not None and iface in (host.name, "host"):
        return Tap(where, host.netns, (host.name,), False)
    if local is not None and iface == local.name:
        return Tap(where, local.netns, (local.name,), False)
    bonds = [_bond_name(p) for b in lab.bridges if b.role == "node" and b.node == node
             for p in b.ports if p.bond_mode is not None]
    choices = [*uplinks, *bonds, *([host.name] if host else []), *([local.name] if local else [])]
    raise LabkitError(f"node {node} has no interface {shown(iface)} to capture on; its: {', '.join(choices)}")


def _bond_name(port) -> str:
    """The bond's name as the topology gives it (br0-up), also when OVS's is a fallback (br0-up-43a3)."""
    base, _, salt = port.name.rpartition("-")
    return base if base and re.fullmatch(r"[0-9a-f]{4}", salt) else port.name


def _node_of(lab: Lab, netns: str) -> str | None:
    return next((ns.node for ns in lab.namespaces if ns.name == netns), None)


def _on_vm(lab: Lab, vm: str, nic: str, where: str, taps: dict[str, tuple[str, ...]]) -> Tap:
    cvms = [d for d in lab.domains if d.role == "cvm"]
    dom = next((d for d in lab.domains if vm in (d.ahv_name, d.name, d.hostname)), None)
    if dom is None and vm == "cvm" and cvms:
        dom = cvms[0]
    if dom is None:
        names = [*lab.node_names, "tor", *(d.ahv_name for d in lab.domains), "cvm"]
        raise LabkitError(f"lab {lab.name} has nothing called {shown(vm)} to capture on; name a node (NODE/eth2), "
                          f"a VM (VM or VM/N), cvm, or tor/PORT: {', '.join(dict.fromkeys(names))}")
    if nic and not nic.isdigit():
        raise LabkitError(f"{shown(where)}: after VM/ give its NIC's number from 0 (cvm/1 is the CVM's eth1)")
    index = int(nic or 0)
    if index >= len(dom.nics):
        raise LabkitError(f"VM {dom.ahv_name} has {len(dom.nics)} NIC(s), numbered from 0; {shown(where)} is not one")
    running = taps.get(dom.name, ())
    if index >= len(running):
        raise LabkitError(f"VM {dom.ahv_name} is not running: its NICs have no port to capture on (vm.on {dom.ahv_name})")
    return Tap(where, None, (running[index],), False)
