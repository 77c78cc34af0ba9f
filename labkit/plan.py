"""The plan: what must change on the host to match the resolved lab (pure).

`plan(lab, host, docs)` diffs the desired objects against the observed host
state and returns ordered, printable `Action`s: deletes of the lab's objects
that are no longer wanted (domains before networks before ports before
links), then creates and updates in dependency order.  An empty plan means
the host already matches.  Drift that labkit's marks do not show (a port's
VLANs changed in OVS, a definition edited with its metadata kept) is compared
field by field (readback.py) and planned as an update.  A name the lab wants
that a foreign object holds (resolve avoids them; the host may change between)
is a `PlanError` raised before anything is touched.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import livechange, names, readback
from .errors import PlanError
from .hoststate import HostState, SeenLink
from .model import DhcpServer, Lab, LinuxBridge, OvsBridge, Pool, Veth
from .values import size_text
from .names import flows_digest, metadata_of

# Execution order. Deletes run first, leaves before what they hang on.
ORDER = [
    ("delete", "relay"), ("stop", "domain"), ("delete", "domain"), ("delete", "dhcp"), ("delete", "network"), ("delete", "ovs-port"),
    ("delete", "ovs-bridge"), ("delete", "veth"), ("delete", "linux-bridge"), ("delete", "netns"),
    ("create", "relay"), ("update", "relay"),  # spawned first, waited for at the end (apply.py)
    ("create", "netns"), ("create", "veth"), ("update", "veth"), ("create", "linux-bridge"), ("update", "linux-bridge"),
    ("create", "ovs-bridge"), ("update", "ovs-bridge"), ("create", "ovs-port"), ("update", "ovs-port"),
    ("attach", "ovs-port"), ("update", "ovs-flows"),
    ("create", "route"), ("update", "route"),
    ("create", "dhcp"), ("update", "dhcp"),
    ("create", "network"), ("update", "network"), ("start", "network"),
    ("attach", "veth"), ("update", "impair"),
    ("create", "pool"), ("create", "volume"), ("update", "volume"),
    ("create", "domain"), ("update", "domain"), ("start", "domain"),
    ("update", "vm-port"),
    # volumes go once no domain uses them (a disk deleted from a running VM is unplugged first)
    ("delete", "volume"), ("delete", "pool"),
]
SYMBOL = {"create": "+", "update": "~", "delete": "-", "start": ">", "stop": "x", "attach": "="}


@dataclass(frozen=True)
class Action:
    verb: str
    kind: str
    name: str
    where: str = ""  # the bridge of a port, the namespace of a link or route
    detail: str = ""
    # The object the action carries out (a Veth, an OvsBridge for a bridge or one of its ports, a
    # rendered document, a DHCP server, a route's gateway, a VM's NIC): apply never looks it up again.
    obj: object = field(default=None, compare=False, repr=False)

    @property
    def rank(self) -> int:
        return ORDER.index((self.verb, self.kind))

    def __str__(self) -> str:
        target = f"{self.where}/{self.name}" if self.where else self.name
        line = f"{SYMBOL[self.verb]} {self.verb:<6} {self.kind:<12} {target}"
        return f"{line}  ({self.detail})" if self.detail else line


@dataclass(frozen=True)
class Plan:
    lab: str
    actions: tuple[Action, ...]

    @property
    def empty(self) -> bool:
        return not self.actions

    def without(self, done: "Plan") -> "Plan":
        """This plan less the actions `done` carried out already."""
        return Plan(self.lab, tuple(a for a in self.actions if a not in done.actions))

    def __str__(self) -> str:
        if self.empty:
            return f"lab {self.lab}: nothing to do, the host already matches"
        return "\n".join([f"lab {self.lab}: {len(self.actions)} change(s)"] + [f"  {a}" for a in self.actions])


def plan(lab: Lab, host: HostState, docs: dict[str, str], dhcp_configs: dict[str, str] | None = None,
         relay_version: str = "") -> Plan:
    """Changes that bring `host` to `lab`; `docs` are the rendered libvirt documents by name,
    `dhcp_configs` the digests of the nodes' DHCP server configurations by node, `relay_version`
    the labkit its CVMs' acli relay must run ("": no relay is planned)."""
    planner = _Planner(lab.name, host)
    planner.namespaces({ns.name: ns for ns in lab.namespaces})
    planner.veths(lab.veths)
    planner.linux_bridges(lab.linux_bridges)
    planner.bridges(lab.bridges)
    planner.dhcp(lab.dhcp_servers, dhcp_configs or {})
    planner.libvirt("network", {n.name: docs[n.name] for n in lab.networks}, host.networks)
    planner.storage(lab.pools, docs)
    planner.libvirt("domain", {d.name: docs[d.name] for d in lab.domains}, host.domains,
                    running={d.name for d in lab.domains if d.power_on})
    planner.vm_ports(lab)
    planner.relay(relay_version if any(d.role == "cvm" for d in lab.domains) else "")
    return planner.finish()


def wanted_vlans(nic) -> tuple[int | None, tuple[int, ...], str | None]:
    """The (tag, trunks, vlan_mode) libvirt gives the OVS port of a domain NIC."""
    if not nic.trunk:
        return nic.tag, (), None
    return nic.native, nic.trunks, ("native-untagged" if nic.native is not None else None)


def plan_down(lab_name: str, host: HostState) -> Plan:
    """Deletes of everything the host shows as `lab_name`'s: works from markers alone, no topology needed."""
    planner = _Planner(lab_name, host)
    planner.namespaces({})
    planner.veths(())
    planner.linux_bridges(())
    planner.bridges(())
    planner.dhcp((), {})
    planner.libvirt("network", {}, host.networks)
    planner.libvirt("domain", {}, host.domains)
    planner.storage((), {})
    planner.relay("")
    return planner.finish()


class _Planner:
    def __init__(self, lab: str, host: HostState):
        self.lab, self.host = lab, host
        self.actions: list[Action] = []
        self.conflicts: list[str] = []
        self.remade: set[str] = set()  # root-namespace ends of veth pairs made anew (an OVS port must reopen them)

    def add(self, *args, **kwargs) -> None:
        self.actions.append(Action(*args, **kwargs))

    def finish(self) -> Plan:
        if self.conflicts:
            raise PlanError("\n".join(self.conflicts))
        return Plan(self.lab, tuple(sorted(self.actions, key=lambda a: a.rank)))

    # namespaces and routes ----------------------------------------------

    def namespaces(self, wanted: dict) -> None:
        seen = {ns.name: ns for ns in self.host.namespaces if names.netns_lab(ns.name) == self.lab}
        for name in sorted(set(seen) - set(wanted)):
            self.add("delete", "netns", name)
        for name, ns in wanted.items():
            if name not in seen:
                self.add("create", "netns", name, detail=ns.role)
            for dest, gateway in ns.routes:
                have = dict(seen[name].routes) if name in seen else {}
                if dest not in have:
                    self.add("create", "route", dest, where=name, detail=f"via {gateway}", obj=gateway)
                elif have[dest] != gateway:
                    self.add("update", "route", dest, where=name, detail=f"via {gateway}, not {have[dest]}", obj=gateway)

    # veth pairs -----------------------------------------------------------

    def veths(self, wanted: tuple[Veth, ...]) -> None:
        links = {(link.netns, link.name): link for link in self.host.links}
        wanted_ends = {(v.netns, v.name) for v in wanted} | {(None, v.peer) for v in wanted}
        # Both ends of a pair carry the same marker and go together: one delete per pair, by its
        # end in the workstation's namespace when it has one, so apply deletes them all in one
        # request there and the lab's namespaces are empty when they are removed.
        unwanted: dict[str, list] = {}
        for link in self.host.links:
            if link.lab == self.lab and link.kind != "bridge" and (link.netns, link.name) not in wanted_ends:
                unwanted.setdefault(link.alias, []).append(link)
        for ends in unwanted.values():
            end = min(ends, key=lambda e: (e.netns is not None, e.netns or "", e.name))
            self.add("delete", "veth", end.name, where=end.netns or "")
        for veth in wanted:
            self._veth(veth, links)

    def _veth(self, veth: Veth, links: dict) -> None:
        end: SeenLink | None = links.get((veth.netns, veth.name))
        peer: SeenLink | None = links.get((None, veth.peer))
        for link in (end, peer):
            if link is not None and link.lab != self.lab:
                where = f" in namespace {link.netns}" if link.netns else ""
                self.conflicts.append(
                    f"interface {link.name}{where} already exists and is not lab {self.lab}'s; "
                    f"delete or rename it, or rename the lab")
                return
        where = veth.netns or ""
        if end is None or peer is None:
            self.add("create", "veth", veth.name, where=where, detail=f"peer {veth.peer}, {veth.purpose}", obj=veth)
            self.remade.add(veth.peer)
            if veth.peer_master:
                self.add("attach", "veth", veth.peer, detail=f"to bridge {veth.peer_master}", obj=veth.peer_master)
            self._impairments(veth, None, None)
            return
        self._impairments(veth, end, peer)
        diffs = []
        if set(end.addresses) != set(veth.addresses):
            diffs.append(f"addresses {', '.join(veth.addresses) or 'none'}")
        if end.mtu != veth.mtu or peer.mtu != veth.mtu:
            diffs.append(f"mtu {veth.mtu}")
        if (end.up, peer.up) != (veth.name not in veth.down, veth.peer not in veth.down):
            diffs.append("up" if not veth.down else "down " + ", ".join(veth.down))
        if diffs:
            self.add("update", "veth", veth.name, where=where, detail=", ".join(diffs), obj=veth)
        if veth.peer_master and peer.master != veth.peer_master:
            self.add("attach", "veth", veth.peer, detail=f"to bridge {veth.peer_master}", obj=veth.peer_master)

    def _impairments(self, veth: Veth, end: SeenLink | None, peer: SeenLink | None) -> None:
        """Each end in the workstation's namespace as the topology impairs it (`impair:`), or
        unimpaired: what lab.impair did by hand is drift, which lab.up clears."""
        wanted = dict(veth.impaired)
        for name, seen in ((veth.peer, peer), (veth.name if veth.netns is None else None, end)):
            if name is None:
                continue
            want = str(wanted[name]) if name in wanted else ""
            have = seen.impairment if seen is not None else ""
            if want != have:
                detail = want or f"clear {have} (made by hand: lab.impair)"
                self.add("update", "impair", name, detail=detail, obj=wanted.get(name))

    # Linux bridges ----------------------------------------------------------

    def linux_bridges(self, wanted: tuple[LinuxBridge, ...]) -> None:
        seen = {link.name: link for link in self.host.links if link.netns is None}
        wanted_names = {b.name for b in wanted}
        for name, link in sorted(seen.items()):
            if link.lab == self.lab and link.kind == "bridge" and name not in wanted_names:
                self.add("delete", "linux-bridge", name)
        for bridge in wanted:
            have = seen.get(bridge.name)
            if have is not None and (have.lab != self.lab or have.kind != "bridge"):
                self.conflicts.append(f"interface {bridge.name} already exists and is not lab {self.lab}'s bridge; "
                                      f"delete or rename it, or rename the lab")
            elif have is None:
                self.add("create", "linux-bridge", bridge.name, detail=f"local network of node {bridge.node}", obj=bridge)
            elif not have.up or have.alias != bridge.alias:
                self.add("update", "linux-bridge", bridge.name, detail="up" if have.alias == bridge.alias else "marked",
                         obj=bridge)

    # OVS ------------------------------------------------------------------

    def bridges(self, wanted: tuple[OvsBridge, ...]) -> None:
        seen = {b.name: b for b in self.host.bridges}
        wanted_names = {b.name for b in wanted}
        for name, bridge in sorted(seen.items()):
            if bridge.lab == self.lab and name not in wanted_names:
                self.add("delete", "ovs-bridge", name)
        foreign_ports = self.host.ports_not_of(self.lab)
        for bridge in wanted:
            have = seen.get(bridge.name)
            if have is not None and have.lab != self.lab:
                self.conflicts.append(f"OVS bridge {bridge.name} already exists and is not lab {self.lab}'s; "
                                      f"delete it (ovs-vsctl del-br {bridge.name}) or rename the lab")
                continue
            for port in bridge.ports:
                if port.name in foreign_ports:
                    self.conflicts.append(f"OVS port {port.name} already exists on a bridge that is not lab {self.lab}'s; "
                                          f"remove it (ovs-vsctl del-port {port.name})")
            if have is None:
                self.add("create", "ovs-bridge", bridge.name, detail=f"{bridge.datapath_type}, {len(bridge.ports)} ports", obj=bridge)
                for port in bridge.ports:
                    self.add("create", "ovs-port", port.name, where=bridge.name, detail=_port_summary(port), obj=bridge)
                self._flows(bridge, None)
                continue
            if have.datapath_type != bridge.datapath_type:
                self.add("update", "ovs-bridge", bridge.name, detail=f"datapath {bridge.datapath_type}", obj=bridge)
            self._flows(bridge, have)
            have_ports = {p.name: p for p in have.ports}
            reattached = False
            for port in bridge.ports:
                if port.name not in have_ports:
                    self.add("create", "ovs-port", port.name, where=bridge.name, detail=_port_summary(port), obj=bridge)
                elif have_ports[port.name] != port:
                    self.add("update", "ovs-port", port.name, where=bridge.name, detail=_port_summary(port), obj=bridge)
                if port.name in have_ports and {i.name for i in port.interfaces} & self.remade:
                    # the device under an existing port was made anew: ovs-vswitchd keeps the old one open
                    self.add("attach", "ovs-port", port.name, where=bridge.name, detail="its device was made anew",
                             obj=bridge)
                    reattached = True
            if reattached and bridge.flows and not any(a.kind == "ovs-flows" and a.name == bridge.name for a in self.actions):
                # a port added again gets another OpenFlow port number: rules naming it are set again
                self.add("update", "ovs-flows", bridge.name, detail=f"{len(bridge.flows)} rules, a port was reattached",
                         obj=bridge)
            for name in sorted(set(have_ports) - {p.name for p in bridge.ports}):
                self.add("delete", "ovs-port", name, where=bridge.name)

    def _flows(self, bridge: OvsBridge, have) -> None:
        """The lab's OpenFlow rules (DHCP for managed networks): set when their digest or their
        number in ovs-vswitchd (which forgets them when it restarts) differs."""
        wanted = flows_digest(bridge.flows) if bridge.flows else ""
        seen_digest, seen_count = (have.flows_digest, have.flow_count) if have else ("", 0)
        if (wanted, len(bridge.flows)) != (seen_digest, seen_count) and (bridge.flows or seen_digest):
            why = "" if have is None or not seen_digest else \
                ", others set before" if wanted != seen_digest else f", {seen_count} in ovs-vswitchd"
            self.add("update", "ovs-flows", bridge.name, detail=f"{len(bridge.flows)} rules{why}", obj=bridge)

    # DHCP -----------------------------------------------------------------

    def dhcp(self, wanted: tuple[DhcpServer, ...], digests: dict[str, str]) -> None:
        seen = {d.node: d for d in self.host.dhcp if d.lab == self.lab}
        for node in sorted(set(seen) - {w.node for w in wanted}):
            self.add("delete", "dhcp", node)
        for server in wanted:
            have = seen.get(server.node)
            detail = f"{len(server.hosts)} binding{'' if len(server.hosts) == 1 else 's'}"
            if have is None or not have.running:
                self.add("create", "dhcp", server.node, detail=detail, obj=server)
            elif have.problem:
                self.add("update", "dhcp", server.node, detail=f"restart: dnsmasq is {have.problem}", obj=server)
            elif have.digest != digests.get(server.node):
                self.add("update", "dhcp", server.node, detail=detail, obj=server)

    def relay(self, version: str) -> None:
        """The lab's acli relay: running the labkit of this version ("": none wanted)."""
        have = next((r for r in self.host.relays if r.lab == self.lab), None)
        if not version:
            if have is not None:
                self.add("delete", "relay", self.lab)
        elif have is None or not have.running:
            self.add("create", "relay", self.lab, detail="acli in the CVMs", obj=version)
        elif have.version != version:
            self.add("update", "relay", self.lab, detail="restart: labkit changed", obj=version)

    # libvirt --------------------------------------------------------------

    def libvirt(self, kind: str, wanted: dict[str, str], seen_objects, running: set[str] | None = None) -> None:
        """`running`: the wanted objects that must run (None: all of them)."""
        seen = {o.name: o for o in seen_objects}
        for name, obj in sorted(seen.items()):
            if obj.lab == self.lab and name not in wanted:
                self.add("delete", kind, name)
        for name, xml in wanted.items():
            have = seen.get(name)
            if have is not None and have.lab != self.lab:
                self.conflicts.append(f"libvirt {kind} {name} already exists and is not lab {self.lab}'s; "
                                      f"remove it (virsh {'net-' if kind == 'network' else ''}undefine {name}) or rename the lab")
            elif have is None:
                self.add("create", kind, name, obj=xml)
            elif have.digest != metadata_of(xml)["digest"]:
                live = livechange.classify(have.xml, xml) if kind == "domain" and have.active and \
                    (running is None or name in running) else None
                if live is not None:
                    self.add("update", kind, name, detail=live.summary(), obj=live)
                else:
                    self.add("update", kind, name, detail="definition changed", obj=xml)
            elif have.facts is not None and (drift := readback.differences(
                    have.facts, readback.domain(xml) if kind == "domain" else readback.network(xml))):
                self.add("update", kind, name, detail="changed on the host: " + "; ".join(drift), obj=xml)
            elif not have.active and (running is None or name in running):
                self.add("start", kind, name)
            elif have.active and running is not None and name not in running:
                self.add("stop", kind, name)


    # storage --------------------------------------------------------------

    def storage(self, wanted: tuple[Pool, ...], docs: dict[str, str]) -> None:
        """The lab's storage container and its volumes: made when missing, grown when smaller than
        wanted; volumes and pools of the lab's that are not wanted go (a volume only grows: one
        larger than wanted is a conflict, never shrunk)."""
        seen = {p.name: p for p in self.host.pools}
        for name, pool in sorted(seen.items()):
            if pool.lab == self.lab and name not in {p.name for p in wanted}:
                for vol in pool.volumes:
                    self.add("delete", "volume", vol.name, where=name)
                self.add("delete", "pool", name)
        for pool in wanted:
            have = seen.get(pool.name)
            if have is not None and (have.lab != self.lab or have.path != pool.path):
                self.conflicts.append(f"libvirt storage pool {pool.name} already exists and is not lab {self.lab}'s; "
                                      f"remove it (virsh pool-destroy {pool.name}; virsh pool-undefine {pool.name}) "
                                      f"or rename the lab")
                continue
            if have is None or not have.active:
                self.add("create", "pool", pool.name, detail=f"{len(pool.volumes)} volumes, {pool.path}",
                         obj=(pool, docs[f"pool:{pool.name}"]))
            volumes = {v.name: v for v in have.volumes} if have is not None else {}
            # images' copies first (a clone is made over one), copies of the lab's disks last (made from one)
            def order(vol) -> tuple:
                copied = vol.source is not None and vol.source.startswith(f"{pool.path}/")
                return (2 if copied else 0 if vol.source is not None else 1, vol.name)

            for vol in sorted(pool.volumes, key=order):
                old = volumes.get(vol.name)
                if old is None:
                    self.add("create", "volume", vol.name, where=pool.name, detail=vol.purpose,
                             obj=(pool, vol, docs[f"volume:{vol.name}"]))
                elif old.capacity < vol.capacity:
                    self.add("update", "volume", vol.name, where=pool.name, obj=(pool, vol, docs[f"volume:{vol.name}"]),
                             detail=f"{vol.purpose}: grow {size_text(old.capacity)} to {size_text(vol.capacity)}")
                elif old.capacity > vol.capacity and vol.backing is None and vol.source is None:
                    self.conflicts.append(f"volume {vol.name} ({vol.purpose}) is {size_text(old.capacity)}, larger than "
                                          f"{size_text(vol.capacity)}; a disk only grows: give its size as at least that")
            for name in sorted(set(volumes) - {v.name for v in pool.volumes}):
                self.add("delete", "volume", name, where=pool.name)

    def vm_ports(self, lab: Lab) -> None:
        """Ports of running domains whose VLANs someone changed in OVS (libvirt set them at start):
        put back, without restarting the guest. Domains being created, updated or started get them anew."""
        touched = {a.name for a in self.actions if a.kind == "domain"}
        seen = {v.iface_id: (b.name, v) for b in self.host.bridges for v in b.vm_ports}
        for dom in lab.domains:
            if not dom.power_on or dom.name in touched:
                continue
            for nic in dom.nics:
                if nic.kind != "ovs" or nic.interfaceid not in seen:
                    continue
                bridge, port = seen[nic.interfaceid]
                tag, trunks, mode = wanted_vlans(nic)
                have = (port.tag, tuple(sorted(port.trunks)), port.vlan_mode if nic.trunk else None)
                if have != (tag, trunks, mode):
                    self.add("update", "vm-port", port.name, where=bridge, obj=nic,
                             detail=f"changed on the host: {_vlan_text(*have)}, want {_vlan_text(tag, trunks, mode)}")


def _vlan_text(tag, trunks, mode) -> str:
    parts = [f"tag {tag}" if tag is not None else "no tag"]
    parts += [f"trunks {','.join(map(str, trunks))}"] if trunks else []
    parts += [mode] if mode else []
    return " ".join(parts)


def _port_summary(port) -> str:
    parts = []
    if port.bond_mode:
        parts.append(f"bond {port.bond_mode} over {', '.join(i.name for i in port.interfaces)}")
    if port.lacp:
        parts.append(f"lacp {port.lacp}")
    if port.tag is not None:
        parts.append(f"tag {port.tag}")
    if port.trunks:
        parts.append(f"trunks {','.join(map(str, port.trunks))}")
    return ", ".join(parts)
