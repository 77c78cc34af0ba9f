"""lab.break: a catalogue of faults AHV administrators meet, each applied to a lab on purpose (pure).

A scenario is a small file in labkit/scenarios/ (NAME.yaml): one line for `lab.break --list`,
the kind of change it makes (which object, how: one of CHANGES below, with its parameters), what
`lab.check` then reports (patterns the tests hold it to), and the answer: why, and the commands
that fix it. `broken(scenario, lab, host, seed)` picks the objects to break among the lab's
(`seed` makes the pick repeatable) and returns the lab as it is to be *on the host*: the pipeline
plans and applies it like any change, while the lab's design (its effective topology) stays as it
was. So `lab.status` shows the drift, `lab.check` the symptoms, and `lab.up` repairs it all.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass, replace
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import names
from .errors import LabkitError
from .hoststate import HostState
from .model import DhcpServer, DhcpSubnet, Domain, DomainNic, Lab, Netns, OvsBridge, OvsInterface, OvsPort, Veth

CATALOGUE = Path(__file__).resolve().parent / "scenarios"
UNUSED_VLAN = 4001  # a VLAN no lab's switch carries: where a port is put when the lab has no other


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9-]{1,40}$")
    summary: str = Field(max_length=100)
    change: str
    params: dict[str, str] = {}
    reports: tuple[str, ...] = Field(min_length=1)  # regular expressions lab.check's table matches, once broken
    answer: str
    fix: tuple[str, ...] = Field(min_length=1)  # shell commands, formatted with the fault's facts


@dataclass(frozen=True)
class Fault:
    """A scenario applied: what was picked (`facts`: names the answer and the fix are written with)."""

    scenario: str
    seed: int
    facts: dict[str, str]

    def answer(self, scenario: Scenario) -> str:
        return scenario.answer.strip().format_map(self.facts)

    def fix(self, scenario: Scenario) -> list[str]:
        return [line.format_map(self.facts) for line in scenario.fix]


class NotApplicable(LabkitError):
    pass


def catalogue() -> dict[str, Scenario]:
    out = {}
    for path in sorted(CATALOGUE.glob("*.yaml")):
        try:
            scenario = Scenario(name=path.stem, **yaml.safe_load(path.read_text()))
        except (ValidationError, TypeError, yaml.YAMLError) as exc:
            raise LabkitError(f"{path}: not a valid scenario ({str(exc).splitlines()[0]}); fix the file") from None
        if scenario.change not in CHANGES:
            raise LabkitError(f"{path}:change: {scenario.change!r} is not one of {', '.join(sorted(CHANGES))}")
        out[scenario.name] = scenario
    return out


def scenario(name: str) -> Scenario:
    scenarios = catalogue()
    if name not in scenarios:
        raise LabkitError(f"there is no scenario {name!r}; `invoke lab.break --list` lists them")
    return scenarios[name]


def broken(scenario: Scenario, lab: Lab, host: HostState, seed: int) -> tuple[Lab, Fault]:
    """The lab as `scenario` leaves it on the host, and what it picked."""
    lab_after, facts = CHANGES[scenario.change](_Picker(lab, host, random.Random(seed), scenario.name), **scenario.params)
    return lab_after, Fault(scenario.name, seed, {k: str(v) for k, v in facts.items()})


class _Picker:
    def __init__(self, lab: Lab, host: HostState, rng: random.Random, name: str):
        self.lab, self.host, self.rng, self.name = lab, host, rng, name

    def one(self, candidates: list, needs: str):
        if not candidates:
            raise NotApplicable(f"scenario {self.name} does not apply to lab {self.lab.name}: it needs {needs}")
        return self.rng.choice(candidates)

    def vm_port(self, nic: DomainNic) -> tuple[str, str]:
        """(OVS port, bridge) libvirt made for a running domain's NIC."""
        for bridge in self.host.bridges:
            for port in bridge.vm_ports:
                if port.iface_id == nic.interfaceid:
                    return port.name, bridge.name
        raise NotApplicable(f"scenario {self.name}: the NIC {nic.mac} has no port on the host; run lab.up first")

    def switch_vlans(self) -> list[int]:
        return sorted({v for b in self.lab.bridges if b.role == "tor" for p in b.ports for v in p.trunks} - {0})

    def free_ifname(self, base: str, alias: str) -> str:
        """A name for a new link in the workstation's namespace: the one a link of the same marker
        already has (a fault applied again, its device unplugged but not yet removed), else a free one."""
        roots = [link for link in self.host.links if link.netns is None]
        if (mine := next((link.name for link in roots if link.alias == alias), None)) is not None:
            return mine
        return next(n for salt in range(64) if (n := names.fit(base, salt)) not in {link.name for link in roots})

    def unused_addresses(self, network: ipaddress.IPv4Network, count: int) -> list[str]:
        used = {str(ipaddress.IPv4Interface(a).ip) for d in self.lab.domains for n in d.nics
                for a in n.addresses + tuple(c for _, c in n.vlan_addresses)}
        used |= {str(ipaddress.IPv4Interface(a).ip) for v in self.lab.veths for a in v.addresses}
        used |= {s.server for d in self.lab.dhcp_servers for s in d.subnets}
        used |= {gw for ns in self.lab.namespaces for _, gw in ns.routes}
        free = [str(h) for h in reversed(list(network.hosts())) if str(h) not in used]
        return free[1:count + 1]  # not the last: the lab's own choices (gateways, rogues of verify) take it


# --------------------------------------------------------------------------- lab edits


def _with_nic(lab: Lab, dom: Domain, old: DomainNic, new: DomainNic) -> Lab:
    nics = tuple(new if n is old else n for n in dom.nics)
    return replace(lab, domains=tuple(replace(d, nics=nics) if d is dom else d for d in lab.domains))


def _with_port(lab: Lab, bridge: OvsBridge, old: OvsPort | None, new: OvsPort) -> Lab:
    ports = tuple(new if p is old else p for p in bridge.ports) if old is not None else bridge.ports + (new,)
    return replace(lab, bridges=tuple(replace(b, ports=ports) if b is bridge else b for b in lab.bridges))


def _with_intruder(p: _Picker, node: str, what: str, bridge: str, vlan: int, cidr: str) -> tuple[Lab, str, str]:
    """A device lab.break plugs into a node's bridge: a namespace of its own, a veth into it
    holding `cidr`, its end an access port of `vlan`. Returns (lab, namespace, port)."""
    lab = p.lab
    netns = names.netns(lab.name, f"{node}-{what}")
    alias = names.link_alias(lab.name, node, "intruder", what)
    port = p.free_ifname(f"{lab.name}-{what}", alias)
    veth = Veth("eth0", port, netns, "intruder", addresses=(cidr,), alias=alias, node=node)
    bridge_obj = next(b for b in lab.bridges if b.name == bridge)
    lab = _with_port(lab, bridge_obj, None, OvsPort(port, (OvsInterface(port),), tag=vlan or None))
    return replace(lab, veths=lab.veths + (veth,), namespaces=lab.namespaces + (Netns(netns, "intruder", node),)), netns, port


def _access_nics(lab: Lab, role: str):
    return [(d, n) for d in lab.domains if d.role == role and d.power_on
            for n in d.nics if n.kind == "ovs" and not n.trunk]


# --------------------------------------------------------------------------- the changes


def vm_port_vlan(p: _Picker) -> tuple[Lab, dict]:
    """A user VM's port on another VLAN than its network's (someone's `ovs-vsctl set port`)."""
    dom, nic = p.one([(d, n) for d, n in _access_nics(p.lab, "uvm") if n.tag], "a running user VM on a VLAN network")
    others = [v for v in p.switch_vlans() if v != nic.tag] or [UNUSED_VLAN]
    tag = p.rng.choice(others)
    port, bridge = p.vm_port(nic)
    return _with_nic(p.lab, dom, nic, replace(nic, tag=tag)), dict(
        vm=dom.ahv_name or dom.name, dev=nic.guest_name, mac=nic.mac, node=dom.node, port=port, bridge=bridge, tag=tag,
        want=nic.tag, network=nic.network)


def cvm_port_tag(p: _Picker) -> tuple[Lab, dict]:
    """The CVM's br0 port tagged with a VLAN while its network is untagged (AHV: change_cvm_vlan)."""
    dom, nic = p.one([(d, n) for d, n in _access_nics(p.lab, "cvm") if n.tag is None], "a running CVM on the untagged VLAN")
    tag = p.rng.choice(p.switch_vlans() or [UNUSED_VLAN])
    port, bridge = p.vm_port(nic)
    return _with_nic(p.lab, dom, nic, replace(nic, tag=tag)), dict(
        cvm=dom.name, node=dom.node, port=port, bridge=bridge, tag=tag, address=nic.addresses[0])


def _node_bonds(lab: Lab, mode: str | None = None):
    return [(b, port) for b in lab.bridges if b.role == "node" for port in b.ports
            if port.bond_mode and len(port.interfaces) > 1 and (mode is None or port.bond_mode == mode)]


def bond_member_out(p: _Picker) -> tuple[Lab, dict]:
    """One uplink taken out of a node's bond (a NIC left out by a bond change)."""
    bridge, port = p.one(_node_bonds(p.lab), "a node bond of two uplinks or more")
    member = p.rng.choice(port.interfaces)
    left = replace(port, interfaces=tuple(i for i in port.interfaces if i is not member))
    return _with_port(p.lab, bridge, port, left), dict(node=bridge.node, bridge=bridge.name, bond=port.name,
                                                        member=member.name, members=len(port.interfaces),
                                                        mtu=member.mtu_request or bridge.mtu)


def _tor_ends(lab: Lab, node: str, bond: OvsPort) -> dict[str, Veth]:
    """The uplink veths under a node's bond, by the node's NIC name."""
    return {v.peer: v for v in lab.veths if v.purpose == "uplink" and v.node == node
            and v.peer in {i.name for i in bond.interfaces}}


def _tor_port_of(lab: Lab, end: str) -> tuple[OvsBridge, OvsPort]:
    return next((b, port) for b in lab.bridges if b.role == "tor" for port in b.ports
                if end in {i.name for i in port.interfaces})


def switch_lacp_off(p: _Picker) -> tuple[Lab, dict]:
    """LACP on the node's bond, a static bond on the switch (its port-channel without LACP)."""
    candidates = []
    for bridge, port in _node_bonds(p.lab):
        if not port.lacp:
            continue
        ends = _tor_ends(p.lab, bridge.node, port)
        tor, tor_port = _tor_port_of(p.lab, next(iter(ends.values())).name)
        if tor_port.lacp:
            candidates.append((bridge, port, tor, tor_port))
    bridge, port, tor, tor_port = p.one(candidates, "a node bond with LACP on both sides (balance-tcp)")
    static = replace(tor_port, lacp=None)  # balance-tcp without LACP: OVS runs it as a static bond
    return _with_port(p.lab, tor, tor_port, static), dict(node=bridge.node, bond=port.name, switch=tor.name,
                                                          switch_port=tor_port.name)


def switch_vlan_missing(p: _Picker, bond_mode: str = "balance-slb") -> tuple[Lab, dict]:
    """A bond member's switch port without one of the VLANs the node's VMs use."""
    candidates = []
    for bridge, port in _node_bonds(p.lab, bond_mode):
        vlans = sorted({n.tag for d in p.lab.domains if d.node == bridge.node for n in d.nics
                        if n.kind == "ovs" and n.source == bridge.name and n.tag})
        for nic_name, veth in sorted(_tor_ends(p.lab, bridge.node, port).items()):
            tor, tor_port = _tor_port_of(p.lab, veth.name)
            if len(tor_port.interfaces) == 1:
                candidates += [(bridge, nic_name, tor, tor_port, v) for v in vlans if v in tor_port.trunks]
    bridge, member, tor, tor_port, vlan = p.one(candidates, f"a {bond_mode} bond whose node runs VMs on a VLAN")
    lacking = replace(tor_port, trunks=tuple(v for v in tor_port.trunks if v != vlan))
    return _with_port(p.lab, tor, tor_port, lacking), dict(node=bridge.node, member=member, switch=tor.name,
                                                           switch_port=tor_port.name, vlan=vlan)


def switch_mtu_low(p: _Picker, mtu: str = "1500") -> tuple[Lab, dict]:
    """Jumbo frames on the node (br0 and its bond at MTU 9000), the switch's ports facing it at 1500."""
    low = int(mtu)
    nodes = sorted({b.node for b, port in _node_bonds(p.lab) if any((i.mtu_request or 0) > low for i in port.interfaces)}
                   | {b.node for b in p.lab.bridges if b.role == "node" and b.mtu > low})
    node = p.one(nodes, f"a node whose uplinks run above MTU {low} (bridges: br0: {{mtu: 9000}})")
    lab, ifaces, want = p.lab, [], 0
    for veth in (v for v in p.lab.veths if v.purpose == "uplink" and v.node == node):
        tor, tor_port = _tor_port_of(lab, veth.name)
        iface = next(i for i in tor_port.interfaces if i.name == veth.name)
        want = max(want, iface.mtu_request or veth.mtu)
        changed = replace(tor_port, interfaces=tuple(replace(i, mtu_request=low) if i is iface else i
                                                     for i in tor_port.interfaces))
        lab = _with_port(lab, tor, tor_port, changed)
        ifaces.append(veth.name)
    return lab, dict(node=node, ifaces=" ".join(ifaces), mtu=low, want=want)


def rogue_dhcp(p: _Picker) -> tuple[Lab, dict]:
    """A device on a managed network's VLAN offering addresses (lab.break's rogue, rogue_dhcp.py)."""
    served = [(server, sub) for server in p.lab.dhcp_servers if not server.rogue for sub in server.subnets]
    server, sub = p.one(served, "a managed network (one with ip_config)")
    bridge = next(b.name for b in p.lab.bridges if b.role == "node" for port in b.ports  # the DHCP server's
                  if port.interfaces[0].name in {v.peer for v in p.lab.veths if v.netns == server.netns
                                                 and v.name == sub.ifname})
    network = ipaddress.IPv4Network(sub.subnet)
    address, offered = p.unused_addresses(network, 2)
    cidr = f"{address}/{network.prefixlen}"
    lab, netns, port = _with_intruder(p, server.node, "rogue", bridge, sub.vlan, cidr)
    rogue = DhcpServer(f"{server.node}-rogue", netns, (DhcpSubnet(sub.network, sub.vlan, "eth0", address, sub.subnet, address),),
                       (("ff:ff:ff:ff:ff:ff", offered, "rogue"),), rogue=True)
    return replace(lab, dhcp_servers=lab.dhcp_servers + (rogue,)), dict(
        node=server.node, network=sub.network, vlan=sub.vlan, bridge=bridge, port=port, server=address, offered=offered,
        netns=netns)


def duplicate_ip(p: _Picker) -> tuple[Lab, dict]:
    """A device on a VM's VLAN holding that VM's address."""
    dom, nic = p.one([(d, n) for d, n in _access_nics(p.lab, "uvm") if n.addresses], "a running user VM with an address")
    lab, netns, port = _with_intruder(p, dom.node, "dup", nic.source, nic.tag or 0, nic.addresses[0])
    return lab, dict(vm=dom.ahv_name or dom.name, dev=nic.guest_name, address=nic.addresses[0].split("/")[0],
                     node=dom.node, bridge=nic.source, port=port, mac=nic.mac, netns=netns)


def host_route(p: _Picker) -> tuple[Lab, dict]:
    """The default route of a node's host (AHV's br0 address) through an address nobody holds."""
    ns = p.one([ns for ns in p.lab.namespaces if ns.role == "node" and dict(ns.routes).get("default")],
               "a node with a default route")
    want = dict(ns.routes)["default"]
    host_cidr = next(a for v in p.lab.veths if v.netns == ns.name and v.purpose == "host" for a in v.addresses) \
        if any(v.netns == ns.name and v.purpose == "host" for v in p.lab.veths) else f"{want}/24"
    wrong = p.unused_addresses(ipaddress.IPv4Interface(host_cidr).network, 1)[0]
    routes = tuple((d, wrong if d == "default" else g) for d, g in ns.routes)
    lab = replace(p.lab, namespaces=tuple(replace(n, routes=routes) if n is ns else n for n in p.lab.namespaces))
    return lab, dict(node=ns.node, netns=ns.name, want=want, wrong=wrong)


def uplink_down(p: _Picker) -> tuple[Lab, dict]:
    """A node's uplink down on the second switch of a pair (its port shut, or a cable pulled)."""
    tors = [b for b in p.lab.bridges if b.role == "tor"]
    if len(tors) < 2:
        raise NotApplicable(f"scenario {p.name} does not apply to lab {p.lab.name}: it needs a pair of switches "
                            f"(switch: {{pair: true}})")
    on_b = {i.name for port in tors[1].ports for i in port.interfaces}
    veth = p.one([v for v in p.lab.veths if v.purpose == "uplink" and v.name in on_b], "an uplink on the second switch")
    lab = replace(p.lab, veths=tuple(replace(v, down=(v.name,)) if v is veth else v for v in p.lab.veths))
    return lab, dict(node=veth.node, uplink=veth.uplink, nic=veth.peer, switch=tors[1].name, switch_port=veth.name)


CHANGES = {
    "vm-port-vlan": vm_port_vlan,
    "cvm-port-tag": cvm_port_tag,
    "bond-member-out": bond_member_out,
    "switch-lacp-off": switch_lacp_off,
    "switch-vlan-missing": switch_vlan_missing,
    "switch-mtu-low": switch_mtu_low,
    "rogue-dhcp": rogue_dhcp,
    "duplicate-ip": duplicate_ip,
    "host-route": host_route,
    "uplink-down": uplink_down,
}
