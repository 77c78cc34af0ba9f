"""What lab.verify expects of a lab's network, derived from the model (pure).

Each `Probe` is one ping from an endpoint (a guest, reached through its
agent, or a lab namespace) to an address, with the expected outcome:

- every CVM reaches its node's 192.168.5.1, its gateway and the other CVMs;
  every node namespace reaches its CVM's 192.168.5.254 and its CVM's address;
- user VMs reach their VLAN's gateway and one user VM of the same VLAN on each
  node (_one_per_node);
- user VMs do not reach another VLAN: its gateway, nor their node's CVM on it,
  checked by the first user VM of each VLAN on each node's bridge (isolation is
  the bridge's and the switch's, which the VLAN's guests there share; one whose
  own port is in another VLAN fails its own gateway and peers). That is checked at layer 2: the source asks by ARP as an unused address it
  borrows in the target's subnet (`borrow`; the guest never holds it), so a
  leak between VLANs shows, not just a missing route. A VM whose port is in the wrong VLAN fails to reach its own
  gateway and reaches the other one, so user VMs are not probed pairwise across
  VLANs: that grew as the square of a lab's VMs and saturated 30-VM labs;
- every guest address is held by one device only: one guest of its subnet asks
  for it by ARP and listens on (`unique`); two MACs answering is a duplicate
  address, which pings alone never show (whichever answers, the ping passes).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from .model import Lab

CVM_LOCAL_VIP = "192.168.5.254"
NODE_LOCAL_IP = "192.168.5.1"


@dataclass(frozen=True)
class Endpoint:
    kind: str  # "guest" (through the agent) or "netns"
    name: str  # domain name or namespace name
    label: str  # what the matrix shows


@dataclass(frozen=True)
class Probe:
    source: Endpoint
    target: str  # the target's label
    address: str
    expect: bool
    borrow: str | None = None  # cross-VLAN checks: the cidr whose address asks, by ARP out of `dev`
    dev: str | None = None
    size: int = 0  # ICMP payload: jumbo paths are probed with full-size frames, unfragmented
    unique: bool = False  # asked by ARP as the source's own address (`borrow`): one device, and one only, answers


@dataclass(frozen=True)
class Outcome:
    probe: Probe
    reached: bool
    detail: str = ""
    ran: bool = True  # False: not checked (its guest did not come up, or the probe did not run)

    @property
    def ok(self) -> bool:
        return self.ran and self.reached == self.probe.expect


def _vlan_of(nic) -> int | None:
    if nic.trunk:
        return nic.native  # the untagged VLAN of an AHV kTrunked NIC (None: every VLAN tagged)
    return nic.tag or 0  # no tag: the untagged segment, AHV's VLAN 0


def probes(lab: Lab) -> list[Probe]:
    out: list[Probe] = []
    gateways = {}  # vlan -> (label, address) from the gateway namespaces
    for veth in lab.veths:
        if veth.purpose == "gateway":
            vlan = int(veth.netns.rsplit(".gw", 1)[1])
            gateways[vlan] = (f"gw{vlan}", veth.addresses[0])
    gateway_label = {str(ipaddress.IPv4Interface(cidr).ip): label for label, cidr in gateways.values()}
    nodes = {ns.node: ns for ns in lab.namespaces if ns.role == "node"}
    cvms = [d for d in lab.domains if d.role == "cvm"]
    for dom in cvms:
        me = Endpoint("guest", dom.name, dom.name)
        cvm_ip = str(ipaddress.IPv4Interface(dom.nics[0].addresses[0]).ip)
        out.append(Probe(me, f"node {dom.node}", NODE_LOCAL_IP, True))
        if dom.gateway:
            out.append(Probe(me, gateway_label.get(dom.gateway, "gateway"), dom.gateway, True))
        node = Endpoint("netns", nodes[dom.node].name, f"node {dom.node}")
        out.append(Probe(node, f"{dom.name} eth1:1", CVM_LOCAL_VIP, True))
        out.append(Probe(node, f"{dom.name} eth0", cvm_ip, True))
        node_gw = nodes[dom.node].routes[0][1]
        out.append(Probe(node, gateway_label.get(node_gw, "gateway"), node_gw, True))
        # The cluster network: every CVM reaches the other CVMs (across the top-of-rack switch).
        for other in cvms:
            other_ip = ipaddress.IPv4Interface(other.nics[0].addresses[0])
            if other is not dom and other_ip.network == ipaddress.IPv4Interface(dom.nics[0].addresses[0]).network \
                    and other.nics[0].vlans == dom.nics[0].vlans:
                out.append(Probe(me, f"{other.name} eth0", str(other_ip.ip), True))

    # Every addressed interface of every guest with its VLAN: access NICs, and trunk NICs' sub-interfaces.
    members = []
    mtu, bridge = {}, {}
    for dom in lab.domains:
        for nic in dom.nics:
            if nic.kind == "ovs" and nic.addresses and _vlan_of(nic) is not None:
                members.append((dom, nic.guest_name, _vlan_of(nic), ipaddress.IPv4Interface(nic.addresses[0])))
            for vlan, cidr in nic.vlan_addresses:
                members.append((dom, f"{nic.guest_name}.{vlan}", vlan, ipaddress.IPv4Interface(cidr)))
            mtu.update({(dom.name, nic.guest_name): nic.mtu} | {(dom.name, f"{nic.guest_name}.{v}"): nic.mtu
                                                               for v, _ in nic.vlan_addresses})
            bridge.update({(dom.name, nic.guest_name): nic.source} | {(dom.name, f"{nic.guest_name}.{v}"): nic.source
                                                                     for v, _ in nic.vlan_addresses})
    guards: set[tuple] = set()  # (node, bridge, VLAN) whose isolation a guest checks already
    for index, (dom, dev, vlan, iface) in enumerate(members):
        if dom.role != "uvm":
            continue
        me = Endpoint("guest", dom.name, _label(dom.name, dev))
        guard = (dom.node, bridge[(dom.name, dev)], vlan) not in guards
        guards.add((dom.node, bridge[(dom.name, dev)], vlan))
        for vlan_gw, (label, cidr) in sorted(gateways.items()):
            gw = ipaddress.IPv4Interface(cidr)
            if vlan_gw == vlan and iface.ip in gw.network:
                out.append(Probe(me, label, str(gw.ip), True))
            elif guard and vlan_gw != vlan and not any(m[0] is dom and m[2] == vlan_gw for m in members):
                out.append(_across(me, label, gw, dev, lab))
        peers = [m for m in members if m[0] is not dom and m[2] == vlan and m[3].network == iface.network]
        for other, other_dev, _, other_iface in _one_per_node(peers, index):
            path_mtu = min(mtu[(dom.name, dev)], mtu[(other.name, other_dev)])
            size = path_mtu - 28 if path_mtu > 1500 else 0  # IPv4 + ICMP headers
            out.append(Probe(me, f"{other.name} {other_dev}", str(other_iface.ip), True, size=size))
        for other, other_dev, other_vlan, other_iface in members:  # its node's CVM: the others add no path
            if guard and other_vlan != vlan and other.role == "cvm" and other.node == dom.node \
                    and not any(m[0] is dom and m[2] == other_vlan for m in members):
                out.append(_across(me, f"{other.name} {other_dev}", other_iface, dev, lab))
    out += _held_once(members)
    return out


def _held_once(members: list) -> list[Probe]:
    """Per subnet of a VLAN, every guest address asked for by ARP by one guest there, which listens
    for a second answer: each guest asks for the next one's, round the subnet (one ARP a guest:
    no guest asks for everybody's)."""
    groups: dict[tuple, list] = {}
    for member in members:
        groups.setdefault((member[2], member[3].network), []).append(member)
    out = []
    for group in groups.values():
        if len(group) < 2:
            continue
        for asker, target in zip(group, group[1:] + group[:1]):
            dom, dev, _, iface = asker
            out.append(Probe(Endpoint("guest", dom.name, _label(dom.name, dev)), f"{target[0].name} {target[1]}",
                             str(target[3].ip), True, borrow=str(iface), dev=dev, unique=True))
    return out


def _one_per_node(peers: list, index: int) -> list:
    """The same-VLAN peers an interface probes: one on each node (its own included), which covers
    every path a frame can take (within the node's bridge, and through each node's uplinks and the
    switch), not every peer: in one broadcast domain an interface that reaches one peer there
    reaches them all, and a broken port fails its own probes. Probing every pair grew as the
    square of the VMs, and each first probe's ARP broadcast reached every guest of the VLAN.
    Which peer rotates with `index`, so that no guest answers everybody."""
    by_node: dict[str, list] = {}
    for peer in peers:
        by_node.setdefault(peer[0].node, []).append(peer)
    return [on_node[index % len(on_node)] for _, on_node in sorted(by_node.items())]


def _label(domain: str, dev: str) -> str:
    """A guest's row in the matrix: its name, with the interface when it is not its first NIC."""
    return domain if dev == "eth0" else f"{domain} {dev}"


def _across(source: Endpoint, label: str, target: ipaddress.IPv4Interface, dev: str, lab: Lab) -> Probe:
    """A probe that must fail: the source borrows an address in the target's subnet."""
    used = {str(ipaddress.IPv4Interface(a).ip) for d in lab.domains for n in d.nics
            for a in n.addresses + tuple(cidr for _, cidr in n.vlan_addresses)}
    used |= {str(ipaddress.IPv4Interface(a).ip) for v in lab.veths for a in v.addresses}
    hosts = list(target.network.hosts())
    borrowed = next(h for h in reversed(hosts) if str(h) not in used and h != target.ip)
    return Probe(source, label, str(target.ip), False, f"{borrowed}/{target.network.prefixlen}", dev)


# lkping's bounds (images/guest/lkping.c): a probe that must answer has REACH_MS; probes that must
# not (isolation) are watched for BLOCKED_MS, or twice the median answer if that is longer,
# all at once, so a guest's checks take about as long as its slowest answer.
REACH_MS, BLOCKED_MS = 5000, 200
NOT_RUN = 99  # a probe with no line in lkping's output
TWO_ANSWERS = 2  # a `unique` probe answered by two MACs
DUPLICATE = "two devices answer for it"


def guest_script(probes: list[Probe]) -> str:
    """One command running all of a guest's probes at once with lkping. An isolation check asks by
    ARP out of its device as the address it borrows in the target's subnet, which the guest never
    holds: nothing in the guest changes. It prints lkping's `<index> <status> <ms>` lines."""
    specs = []
    for p in probes:
        spec = ("=" if p.unique else "+" if p.expect else "-") + p.address
        if p.borrow:
            spec += f"@{p.dev}={p.borrow.split('/')[0]}"
        if p.size:
            spec += f"/{p.size}"
        specs.append(spec)
    return f"lkping -t {REACH_MS} -b {BLOCKED_MS} -- {' '.join(specs)}"


def parse_script_output(probes: list[Probe], output: str) -> dict[int, int]:
    """lkping's `<index> <status> <ms>` lines -> {index: status}; a probe with no line did not run."""
    found = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit():
            found[int(parts[0])] = int(parts[1])
    return {i: found.get(i, NOT_RUN) for i in range(len(probes))}


def matrix(outcomes: list[Outcome]) -> str:
    outcomes = [o for o in outcomes if not o.probe.unique]  # one per address: failures list them
    sources = list(dict.fromkeys(o.probe.source.label for o in outcomes))
    targets = list(dict.fromkeys(o.probe.target for o in outcomes))
    cell = {(o.probe.source.label, o.probe.target): o for o in outcomes}
    header = "from \\ to"
    width = max(len(s) for s in sources + [header])
    cols = [max(len(t), 8) for t in targets]
    lines = [f"{header:<{width}}  " + "  ".join(f"{t:<{w}}" for t, w in zip(targets, cols))]
    for s in sources:
        row = []
        for t, w in zip(targets, cols):
            o = cell.get((s, t))
            text = "" if o is None else ("ok" if o.reached else "blocked") if o.ok else \
                "n/a" if not o.ran else ("LEAK" if o.reached else "FAIL")
            row.append(f"{text:<{w}}")
        lines.append(f"{s:<{width}}  " + "  ".join(row))
    return "\n".join(lines)


def describe_failure(outcome: Outcome) -> str:
    p = outcome.probe
    if not outcome.ran:
        return f"{p.source.label} -> {p.target} ({p.address}) not checked: {outcome.detail}"
    if p.unique and outcome.detail == DUPLICATE:
        return f"{p.source.label} hears two devices answer ARP for {p.target}'s address {p.address}: a duplicate address"
    if p.expect:
        return f"{p.source.label} cannot reach {p.target} ({p.address}){': ' + outcome.detail if outcome.detail else ''}"
    return f"{p.source.label} reaches {p.target} ({p.address}) across VLANs; they must be isolated"

