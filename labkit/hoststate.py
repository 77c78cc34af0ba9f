"""What the host holds, as the adapters observe it (a plain data model; tests feed recorded states).

Each `Seen*` carries the owning lab (from OVSDB external_ids, libvirt
<metadata>, link aliases or the netns name), or None for foreign objects,
and the fields that plan compares with the resolved model.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace

from . import names, readback
from .model import HostFacts, OvsInterface, OvsPort


@dataclass(frozen=True)
class SeenVmPort:
    """A port libvirt made for a domain's NIC (its Interface's iface-id is the NIC's interfaceid)."""

    name: str
    iface_id: str
    tag: int | None = None
    trunks: tuple[int, ...] = ()
    vlan_mode: str | None = None
    problem: str = ""  # the interface's error, or "link down"


@dataclass(frozen=True)
class SeenBridge:
    name: str
    lab: str | None
    datapath_type: str = ""
    ports: tuple[OvsPort, ...] = ()  # the lab's ports only (ports libvirt adds are not labkit's to manage)
    other_ports: tuple[str, ...] = ()  # ports not marked as labkit's: vnetN, taps, the local port
    flows_digest: str = ""  # of the OpenFlow rules labkit last set (external_ids labkit-flows)
    flow_count: int = 0  # rules with the lab's cookie in ovs-vswitchd now (0 after it restarted)
    vm_ports: tuple[SeenVmPort, ...] = ()  # ports of domain NICs, as OVS has them now
    bond_problems: tuple[tuple[str, tuple[str, ...]], ...] = ()  # the lab's bonds: (port, what keeps each member idle)


@dataclass(frozen=True)
class SeenLink:
    name: str
    netns: str | None  # None: the workstation's namespace
    alias: str | None  # labkit's marker (both ends of a pair carry the same one), or a foreign alias
    kind: str = ""
    up: bool = True
    mtu: int = 1500
    master: str | None = None
    addresses: tuple[str, ...] = ()
    index: int = 0  # ifindex, in its namespace
    peer_index: int = 0  # a veth's IFLA_LINK: its peer's ifindex (in the peer's namespace)
    impairment: str = ""  # its egress's netem or tbf, as impair.Impairment says it ("": none)

    @property
    def lab(self) -> str | None:
        return names.link_lab(self.alias)


@dataclass(frozen=True)
class SeenNetns:
    name: str
    lab: str | None
    routes: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class SeenNetwork:
    name: str
    lab: str | None
    bridge: str = ""
    digest: str = ""
    active: bool = False
    facts: readback.NetworkFacts | None = None  # its definition, read back


@dataclass(frozen=True)
class SeenDomain:
    name: str
    lab: str | None
    digest: str = ""
    active: bool = False
    ifnames: tuple[str, ...] = ()  # target devices of its NICs (taps, vnetN)
    vcpus: int = 0
    facts: readback.DomainFacts | None = None  # its (inactive) definition, read back
    builtin: bool = False  # it boots labkit's built-in guest (idle, it costs next to no CPU)
    xml: str = field(default="", compare=False, repr=False)  # its inactive definition: plan works out live changes from it


@dataclass(frozen=True)
class SeenVolume:
    name: str
    capacity: int  # bytes
    format: str = ""
    backing: str | None = None


@dataclass(frozen=True)
class SeenPool:
    """A libvirt storage pool; a lab's when its directory is under labkit's storage for that lab."""

    name: str
    lab: str | None
    path: str
    active: bool
    volumes: tuple[SeenVolume, ...] = ()


@dataclass(frozen=True)
class GuestLoad:
    """Running guests' vCPUs: of built-in guests (labkit's kernel, idle almost always) and of others."""

    vcpus: int = 0
    builtin: int = 0


@dataclass(frozen=True)
class SeenDhcp:
    """A lab's DHCP server (dnsmasq) on one node, from its files under /run/labkit/<lab>/dhcp."""

    lab: str
    node: str
    running: bool
    digest: str  # of the configuration it runs with
    problem: str = ""  # why a running one does not serve its node (stopped, another namespace, not listening)


@dataclass(frozen=True)
class SeenRelay:
    """A lab's acli relay (the process that answers `acli` typed in its CVMs), from its pid file."""

    lab: str
    running: bool
    version: str  # of the labkit code it runs (memo.code_digest): a new labkit restarts it


@dataclass(frozen=True)
class HostState:
    bridges: tuple[SeenBridge, ...] = ()
    links: tuple[SeenLink, ...] = ()
    namespaces: tuple[SeenNetns, ...] = ()
    networks: tuple[SeenNetwork, ...] = ()
    domains: tuple[SeenDomain, ...] = ()
    datapath_type: str = "system"
    dhcp: tuple[SeenDhcp, ...] = ()
    pools: tuple[SeenPool, ...] = ()
    uefi: bool = False  # OVMF is installed
    netem: bool = True  # the kernel has tc's netem (lab.impair's delay, loss, ...)
    relays: tuple[SeenRelay, ...] = ()

    def ports_not_of(self, lab: str) -> frozenset[str]:
        """OVS port names on bridges that are not `lab`'s (port names are global to ovs-vswitchd)."""
        return frozenset(name for b in self.bridges if b.lab != lab
                         for name in [p.name for p in b.ports] + list(b.other_ports))

    def other_guests(self, lab: str) -> GuestLoad:
        """vCPUs of the running guests that are not `lab`'s (other labs', anyone's)."""
        others = [d for d in self.domains if d.active and d.lab != lab]
        return GuestLoad(sum(d.vcpus for d in others if not d.builtin), sum(d.vcpus for d in others if d.builtin))

    def running(self, lab: str) -> frozenset[str]:
        """The lab's domains that are running now."""
        return frozenset(d.name for d in self.domains if d.lab == lab and d.active)

    def facts_for(self, lab: str) -> HostFacts:
        """Names this lab must not take: everything on the host except what the lab owns already."""
        ours_links = {link.name for link in self.links if link.netns is None and link.lab == lab}
        ours_links |= {n.bridge for n in self.networks if n.lab == lab}
        ours_links |= {b.name for b in self.bridges if b.lab == lab}  # netdev bridges show up as tap links
        for dom in self.domains:
            if dom.lab == lab:
                ours_links |= set(dom.ifnames)
        root_links = {link.name for link in self.links if link.netns is None}
        return HostFacts(
            taken_links=frozenset(root_links - ours_links) | self.ports_not_of(lab),
            taken_bridges=frozenset(b.name for b in self.bridges if b.lab != lab)
            | frozenset(n.bridge for n in self.networks if n.lab != lab and n.bridge),
            taken_networks=frozenset(n.name for n in self.networks if n.lab != lab),
            taken_domains=frozenset(d.name for d in self.domains if d.lab != lab),
            datapath_type=self.datapath_type,  # type: ignore[arg-type]
            uefi=self.uefi,
            netem=self.netem,
            own_names=frozenset(ours_links | {link.name for link in self.links if link.lab == lab}
                                | {p.name for b in self.bridges if b.lab == lab for p in b.ports}
                                | {n.name for n in self.networks if n.lab == lab}
                                | {d.name for d in self.domains if d.lab == lab}),
        )

    def adopt(self, lab: str, pairs: list[tuple[str, str, str | None]]) -> "HostState":
        """Links that `lab` was creating when it was killed (see state.record_intent) are its own,
        though they never got their mark: a veth pair with exactly the intended names, whose ends
        are each other's peers (IFLA_LINK), each unmarked or already marked as the lab's (a kill
        between marking one end and the other); a Linux bridge of the intended name (an intent of
        its name twice, no namespace), unmarked. A link that merely has an intended name (someone
        else's, made later) stays foreign. An unmarked end gets the pair's mark."""
        by_place = {(link.netns, link.name): link for link in self.links}
        ends = {}
        for peer, name, netns in pairs:
            if peer == name and netns is None:  # a Linux bridge (the local network's), unmarked if killed
                bridge = by_place.get((None, name))
                if bridge is not None and bridge.kind == "bridge" and bridge.alias is None:
                    ends[(None, name)] = names.link_alias(lab, "intended", name)
                continue
            a, b = by_place.get((None, peer)), by_place.get((netns, name))
            if a is None or b is None or "veth" not in (a.kind, b.kind):
                continue
            if a.peer_index != b.index or b.peer_index != a.index:
                continue
            if any(end.alias is not None and end.lab != lab for end in (a, b)):  # another's, or not labkit's
                continue
            mark = a.alias or b.alias or names.link_alias(lab, "intended", peer)
            for place, end in (((None, peer), a), ((netns, name), b)):
                if end.alias is None:
                    ends[place] = mark
        links = tuple(replace(link, alias=ends[(link.netns, link.name)]) if (link.netns, link.name) in ends else link
                      for link in self.links)
        return replace(self, links=links)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "HostState":
        raw = json.loads(text)

        def port(p: dict) -> OvsPort:
            ifaces = tuple(OvsInterface(i["name"], i["type"], _pairs(i["options"]), i["mtu_request"]) for i in p["interfaces"])
            return OvsPort(p["name"], ifaces, p["tag"], tuple(p["trunks"]), p["vlan_mode"], p["bond_mode"], p["lacp"],
                           _pairs(p["other_config"]))

        return cls(
            bridges=tuple(SeenBridge(b["name"], b["lab"], b["datapath_type"], tuple(port(p) for p in b["ports"]),
                                     tuple(b["other_ports"]), b.get("flows_digest", ""), b.get("flow_count", 0),
                                     tuple(SeenVmPort(**{**v, "trunks": tuple(v["trunks"])}) for v in b.get("vm_ports", ())),
                                     tuple((port, tuple(problems)) for port, problems in b.get("bond_problems", ())))
                          for b in raw["bridges"]),
            links=tuple(SeenLink(**{**link, "addresses": tuple(link["addresses"])}) for link in raw["links"]),
            namespaces=tuple(SeenNetns(n["name"], n["lab"], tuple(tuple(r) for r in n["routes"])) for n in raw["namespaces"]),
            networks=tuple(SeenNetwork(**{**n, "facts": readback.network_from_dict(n.get("facts"))}) for n in raw["networks"]),
            domains=tuple(SeenDomain(**{**d, "ifnames": tuple(d["ifnames"]), "facts": readback.domain_from_dict(d.get("facts"))})
                          for d in raw["domains"]),
            datapath_type=raw["datapath_type"],
            dhcp=tuple(SeenDhcp(**d) for d in raw.get("dhcp", ())),
            pools=tuple(SeenPool(**{**p, "volumes": tuple(SeenVolume(**v) for v in p["volumes"])})
                        for p in raw.get("pools", ())),
            uefi=raw.get("uefi", False),
            netem=raw.get("netem", True),
            relays=tuple(SeenRelay(**r) for r in raw.get("relays", ())),
        )


def _pairs(items) -> tuple[tuple[str, str], ...]:
    return tuple(tuple(kv) for kv in items)  # type: ignore[misc]
