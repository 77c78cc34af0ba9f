"""Properties of resolve: deterministic, names within Linux's limits, identities distinct across labs."""

from __future__ import annotations

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from labkit import model, topology
from labkit.topology import IFNAME_RE

lab_names = st.from_regex(r"[a-z][a-z0-9-]{0,11}", fullmatch=True)
host_names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9-]{0,31}", fullmatch=True)
ifnames = st.from_regex(r"[a-z][a-z0-9]{0,14}", fullmatch=True)
taken = st.frozensets(st.sampled_from(["br0", "eth0", "eth2", "virbr0", "bond0", "br0-up", "eth1", "tap00001"]))


@st.composite
def topologies(draw):
    lab = draw(lab_names)
    node_names = draw(st.lists(host_names, min_size=1, max_size=3, unique=True))
    uplinks = draw(st.lists(ifnames, min_size=2, max_size=4, unique=True))
    bond_name = draw(ifnames.filter(lambda n: n not in uplinks and n != "br0"))
    nodes = []
    for i, name in enumerate(node_names):
        nodes.append({
            "name": name, "host_ip": f"10.59.31.{10 + i}/23", "cvm": {"ip": f"10.59.30.{10 + i}/23"},
            "uplinks": {u: "10g" for u in uplinks},
            "bridges": {"br0": {"bond": {"name": bond_name, "interfaces": uplinks[:2]}}},
        })
    vm_names = draw(st.lists(host_names, max_size=4, unique=True))
    vms = [{"name": v, "node": draw(st.sampled_from(node_names)),
            "nics": [{"network": "vlan32"}] * draw(st.integers(1, 3))} for v in vm_names]
    return topology.Topology.model_validate({
        "name": lab, "switch": {"vlans": [0, 32], "gateways": {0: "10.59.30.1/23"}},
        "nodes": nodes, "networks": [{"name": "vlan32", "vlan": 32}], "vms": vms,
    })


def all_ifnames(lab: model.Lab) -> list[str]:
    names = [b.name for b in lab.bridges]
    names += [p.name for b in lab.bridges for p in b.ports] + [i.name for b in lab.bridges for p in b.ports for i in p.interfaces]
    names += [v.name for v in lab.veths] + [v.peer for v in lab.veths] + [n.bridge for n in lab.networks]
    names += [nic.target for d in lab.domains for nic in d.nics if nic.target]
    return names


@settings(max_examples=150, deadline=None)
@given(topologies(), taken)
def test_resolve_is_deterministic(topo, taken_names):
    facts = model.HostFacts(taken_links=taken_names, datapath_type="netdev")
    assert topology.crosscheck(topo) == []
    assert model.resolve(topo, facts) == model.resolve(topo, facts)


@settings(max_examples=150, deadline=None)
@given(topologies(), taken)
def test_names_fit_linux_and_never_take_a_held_name(topo, taken_names):
    lab = model.resolve(topo, model.HostFacts(taken_links=taken_names))
    for name in all_ifnames(lab):
        assert len(name.encode()) <= 15 and IFNAME_RE.fullmatch(name), name
    root_names = [b.name for b in lab.bridges] + [v.peer for v in lab.veths if v.netns is None] + \
        [v.name for v in lab.veths if v.netns is None] + [nic.target for d in lab.domains for nic in d.nics if nic.target]
    assert not set(root_names) & taken_names
    assert len(root_names) == len(set(root_names)), "two objects share a name in the workstation's namespace"
    ports = [p.name for b in lab.bridges for p in b.ports]
    assert len(ports) == len(set(ports)), "OVS port names must be unique across bridges"
    macs = [nic.mac for d in lab.domains for nic in d.nics]
    assert len(macs) == len(set(macs))


@settings(max_examples=100, deadline=None)
@given(topologies(), lab_names)
def test_different_labs_never_share_identities(topo, other_name):
    assume(other_name != topo.name)
    other = topo.model_copy(update={"name": other_name})
    a, b = model.resolve(topo), model.resolve(other)
    ids = lambda lab: {d.uuid for d in lab.domains} | {n.uuid for n in lab.networks} | \
        {nic.interfaceid for d in lab.domains for nic in d.nics if nic.interfaceid}
    assert not ids(a) & ids(b)
    assert not {ns.name for ns in a.namespaces} & {ns.name for ns in b.namespaces}


def test_cut_names_whose_hashes_collide_are_salted_apart():
    """Found by hypothesis: in lab hfdyq-owkqr0, '...-n1-host' and '...-gw0' both cut to hfdyq-owkq-d267."""
    topo = topology.Topology.model_validate({
        "name": "hfdyq-owkqr0", "switch": {"vlans": [0, 32], "gateways": {0: "10.59.30.1/23"}},
        "nodes": [{"name": "0", "host_ip": "10.59.31.10/23", "cvm": {"ip": "10.59.30.10/23"},
                   "uplinks": {"b": "10g", "c": "10g"}, "bridges": {"br0": {"bond": {"name": "a", "interfaces": ["b", "c"]}}}}],
    })
    lab = model.resolve(topo)
    ports = [p.name for b in lab.bridges for p in b.ports]
    assert len(ports) == len(set(ports)) and all(len(p) <= 15 for p in ports)
