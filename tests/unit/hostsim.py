"""The host state a correct apply leaves behind, computed from the model (for plan tests only).

Real observation lives in labkit/host/; this lets the pure plan be tested
against "host already matches" and "host has an older version of the lab".
"""

from __future__ import annotations

from dataclasses import replace

from labkit import pipeline, readback
from labkit.host import dhcp
from labkit.hoststate import (HostState, SeenBridge, SeenDhcp, SeenDomain, SeenLink, SeenNetns, SeenNetwork, SeenPool,
                              SeenRelay, SeenVmPort, SeenVolume)
from labkit.model import Lab
from labkit.names import flows_digest, metadata_of


def state_after(lab: Lab, docs: dict[str, str], base: HostState = HostState()) -> HostState:
    links = []
    for veth in lab.veths:
        impaired = {end: str(imp) for end, imp in veth.impaired}
        links.append(SeenLink(veth.name, veth.netns, veth.alias, "veth", True, veth.mtu, None, veth.addresses,
                              impairment=impaired.get(veth.name, "") if veth.netns is None else ""))
        links.append(SeenLink(veth.peer, None, veth.alias, "veth", True, veth.mtu, veth.peer_master, (),
                              impairment=impaired.get(veth.peer, "")))
    links += [SeenLink(b.name, None, b.alias, "bridge") for b in lab.linux_bridges]
    return replace(
        base,
        bridges=base.bridges + tuple(SeenBridge(b.name, lab.name, b.datapath_type,
                                                tuple(through_ovsdb(lab.name, p) for p in b.ports), (),
                                                flows_digest(b.flows) if b.flows else "", len(b.flows), _vm_ports(lab, b.name))
                                     for b in lab.bridges),
        links=base.links + tuple(links),
        namespaces=base.namespaces + tuple(SeenNetns(ns.name, lab.name, ns.routes) for ns in lab.namespaces),
        networks=base.networks + tuple(SeenNetwork(n.name, lab.name, n.bridge, metadata_of(docs[n.name])["digest"], True,
                                                   readback.network(docs[n.name])) for n in lab.networks),
        domains=base.domains + tuple(SeenDomain(d.name, lab.name, metadata_of(docs[d.name])["digest"], d.power_on,
                                                tuple(nic.target for nic in d.nics if nic.target), d.vcpus,
                                                readback.domain(docs[d.name]), xml=docs[d.name]) for d in lab.domains),
        pools=base.pools + tuple(SeenPool(p.name, lab.name, p.path, True,
                                          tuple(SeenVolume(v.name, v.capacity, v.format, v.backing) for v in p.volumes))
                                 for p in lab.pools),
        dhcp=base.dhcp + tuple(SeenDhcp(lab.name, s.node, True, dhcp.digest(dhcp.config(lab.name, s)))
                               for s in lab.dhcp_servers),
        relays=base.relays + ((SeenRelay(lab.name, True, pipeline.relay_version()),)
                              if any(d.role == "cvm" for d in lab.domains) else ()),
    )


def _vm_ports(lab: Lab, bridge: str) -> tuple[SeenVmPort, ...]:
    """The ports libvirt makes for running domains' NICs on `bridge`, with the VLANs it sets."""
    from labkit.plan import wanted_vlans

    return tuple(SeenVmPort(nic.target or f"vnet{i}", nic.interfaceid, *wanted_vlans(nic))
                 for d in lab.domains if d.power_on for i, nic in enumerate(d.nics)
                 if nic.kind == "ovs" and nic.source == bridge)


def through_ovsdb(lab: str, port):
    """`port` as the OVS adapter writes it to OVSDB (ConvergeBridge._set_port) and reads it back
    (_read_port): the rows are plain objects, the code on both sides is the adapter's own, so a
    port the adapter would not read back as written makes the plans here differ."""
    from types import SimpleNamespace

    from labkit.host.ovs import ConvergeBridge, _read_port

    class Txn:
        def insert(self, _table):
            return SimpleNamespace()

    writer = ConvergeBridge.__new__(ConvergeBridge)
    writer.lab, writer.api = lab, SimpleNamespace(_tables={"Interface": None, "Port": None})
    row = SimpleNamespace(name=port.name, interfaces=[])
    writer._set_port(Txn(), row, port)
    return _read_port(row)
