"""lab.capture (pure): what a user names in a lab, as the interfaces a capture listens on, and the
tcpdump command line that listens there.

Names, as a network engineer reads the lab:

    NODE/eth2      an uplink, the node's side (802.1Q tags as the node sends them)
    NODE/br0-up    a bond: all its members at once
    NODE/br0       the node's host port (the AHV host's own traffic, untagged, in the node's namespace)
    NODE/virbr0    the node's end of NTNX-Local-Network (192.168.5.1)
    VM, VM/N       a VM's first or N-th NIC (from 0), its tap; `cvm/1` is the CVM's eth1
    tor/PORT       a port of the top-of-rack switch (tor-b/PORT: the pair's second switch)

Everything is captured by tcpdump on interfaces that already exist (nothing is added to the lab
or the host, so nothing can be left behind); a bond's members by one tcpdump each, their packets
merged as they come (features/capture.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import LabkitError
from .model import Lab
from .values import shown

MAX_COUNT = 10_000_000
MAX_SECONDS = 24 * 3600
_FILTER = re.compile(r"[\x20-\x7e]{1,1000}")  # printable ASCII: what BPF's grammar is written in


@dataclass(frozen=True)
class Tap:
    """Where a capture listens: interfaces in one namespace (None: the workstation's)."""

    label: str
    netns: str | None
    ifnames: tuple[str, ...]
    tagged: bool  # frames carry their VLAN tags (a trunk): --vlan N selects one VLAN


@dataclass(frozen=True)
class Request:
    where: str
    vlan: int | None = None
    bpf: str | None = None
    out: str | None = None  # a pcap file; "-" for standard output
    count: int | None = None
    seconds: float | None = None


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


def check(request: Request, tap: Tap) -> None:
    """The user's values, checked for tcpdump before it sees them."""
    if request.vlan is not None:
        if not 1 <= request.vlan <= 4094:
            raise LabkitError(f"--vlan {request.vlan} is not a VLAN id; give 1-4094")
        if not tap.tagged:
            raise LabkitError(f"{tap.label} is an access port: its frames carry no VLAN tag; capture on an uplink, "
                              f"a bond or a switch port to see VLAN {request.vlan}")
    if request.bpf is not None and not _FILTER.fullmatch(request.bpf):
        raise LabkitError("--filter is a tcpdump (BPF) expression: printable ASCII, at most 1000 characters")
    if request.count is not None and not 1 <= request.count <= MAX_COUNT:
        raise LabkitError(f"--count {request.count} is not 1-{MAX_COUNT}")
    if request.seconds is not None and not 0 < request.seconds <= MAX_SECONDS:
        raise LabkitError(f"--seconds {request.seconds} is not more than 0 and at most {MAX_SECONDS}")
    if request.out is not None and request.out != "-" and (not request.out or "\0" in request.out):
        raise LabkitError("-w takes a file name, or - for standard output")


def expression(request: Request) -> str:
    """The BPF expression: the VLAN, then the user's filter."""
    parts = [f"vlan {request.vlan}"] if request.vlan is not None else []
    if request.bpf:
        parts.append(f"({request.bpf})")
    return " and ".join(parts)


def command(request: Request, ifname: str, pcap: bool) -> list[str]:
    """tcpdump's command line on one interface (without the namespace it runs in): decoded lines,
    or (`pcap`) a pcap stream on stdout, packet by packet."""
    argv = ["tcpdump", "-i", ifname, "-n", "-e", "-Z", "root"]
    argv += ["-U", "-w", "-"] if pcap else ["-l"]  # a packet, or a line, as soon as it is seen
    if request.count is not None:
        argv += ["-c", str(request.count)]
    bpf = expression(request)
    return argv + (["--", bpf] if bpf else [])
