"""What lab.verify expects of each example (golden), and the commands the guests run for it."""

from __future__ import annotations

import ipaddress

import pytest

from labkit import dhcpcheck, model, pipeline, verify

from ..conftest import REPO

EXAMPLES = sorted(p.stem for p in (REPO / "examples").glob("*.yaml"))


@pytest.mark.parametrize("example", EXAMPLES)
def test_golden_expectations(example, golden):
    lab = model.resolve(pipeline.load(str(REPO / "examples" / f"{example}.yaml")))
    lines = [f"{p.source.label} -> {p.target} {p.address}: {'held once' if p.unique else 'reach' if p.expect else 'blocked'}"
             + (f" (asking as {p.borrow} on {p.dev})" if p.unique else f" (borrowing {p.borrow} on {p.dev})" if p.borrow else "")
             + (f" ({p.size}-byte payload)" if p.size else "")
             for p in verify.probes(lab)]
    checks, rogues = dhcpcheck.checks(lab)
    lines += [f"DHCP: {c}" for c in checks] + [f"DHCP rogue: {r.source.label} {r.dev} as {r.address}" for r in rogues]
    golden(REPO / "tests/golden/verify" / f"{example}.txt", "\n".join(lines) + "\n")


def test_cross_vlan_probes_borrow_an_unused_address_in_the_target_subnet():
    lab = model.resolve(pipeline.load(None))
    across = [p for p in verify.probes(lab) if not p.expect]
    assert across, "the default lab must check VLAN isolation"
    used = {a.split("/")[0] for d in lab.domains for n in d.nics for a in n.addresses}
    for p in across:
        assert p.borrow and p.borrow.split("/")[0] not in used and p.dev == "eth0"
        script = verify.guest_script([p])  # asked by ARP as the borrowed address: nothing added in the guest
        assert script.startswith("lkping ") and script.endswith(f" -{p.address}@eth0={p.borrow.split('/')[0]}")


def test_in_a_cluster_each_guest_probes_one_peer_per_node_and_each_is_probed():
    """verify._one_per_node: the probes grow with the VMs, not as their square, and still take
    every path (within a node, through each node's uplinks) and reach every guest."""
    lab = model.resolve(pipeline.load(str(REPO / "bench/topologies/cluster-3x10.yaml")))
    probes = verify.probes(lab)
    uvms = {d.name: d for d in lab.domains if d.role == "uvm"}
    targets = {p.target.split(" ")[0] for p in probes if p.expect}
    assert set(uvms) <= targets
    for name, dom in uvms.items():
        peers = [p.target.split(" ")[0] for p in probes if p.source.name == name and p.expect and not p.unique and p.target in
                 {f"{other} eth0" for other in uvms}]
        assert sorted(uvms[peer].node for peer in peers) == ["n1", "n2", "n3"], (name, peers)
    assert len([p for p in probes if not p.unique]) < 300  # every same-VLAN pair was 621


def test_every_same_vlan_pair_is_checked_both_ways():
    lab = model.resolve(pipeline.load(str(REPO / "examples/two-bridges.yaml")))
    pairs = {(p.source.name, p.target.split(" ")[0]) for p in verify.probes(lab) if p.expect}
    assert {("web1", "fw1"), ("fw1", "web1"), ("fw1", "dmz1"), ("dmz1", "fw1")} <= pairs
    assert ("web1", "dmz1") not in pairs


def test_matrix_marks_leaks_and_failures():
    lab = model.resolve(pipeline.load(None))
    probes = verify.probes(lab)
    outcomes = [verify.Outcome(p, reached=not p.expect if i in (0, len(probes) - 1) else p.expect)
                for i, p in enumerate(probes)]
    text = verify.matrix(outcomes)
    assert "FAIL" in text and text.count("FAIL") + text.count("LEAK") == 2
    failed = [verify.describe_failure(o) for o in outcomes if not o.ok]
    assert failed[0] == f"{probes[0].source.label} cannot reach {probes[0].target} ({probes[0].address})"


def test_a_guest_runs_all_its_probes_in_one_lkping_and_changes_nothing():
    lab = model.resolve(pipeline.load(str(REPO / "examples/two-bridges.yaml")))
    mine = [p for p in verify.probes(lab) if p.source.name == "fw1"]
    script = verify.guest_script(mine)
    assert script.startswith("lkping ") and ";" not in script and "ip addr" not in script
    # fw1 eth1 guards VLAN 50 on its bridge (web1 guards VLAN 32): it asks by ARP out of its own device
    assert "@eth1=10.59.31.254" in script and "@eth0=10.59.31.254" not in script
    specs = script.split()[6:]  # after lkping -t N -b N --
    assert len(specs) == len(mine)
    for spec, p in zip(specs, mine):
        assert spec.startswith("=" if p.unique else "+" if p.expect else "-") and p.address in spec
        assert ("@" in spec) == bool(p.borrow) and (not p.borrow or spec.endswith(f"@{p.dev}={p.borrow.split('/')[0]}"))
    assert verify.parse_script_output(mine, "0 0 12\n1 1 0\nnoise\n") == {0: 0, 1: 1} | {i: verify.NOT_RUN for i in range(2, len(mine))}


def test_jumbo_probes_carry_their_payload_size():
    lab = model.resolve(pipeline.load(str(REPO / "examples/jumbo.yaml")))
    sized = [p for p in verify.probes(lab) if p.size]
    assert sized
    assert f"+{sized[0].address}/{sized[0].size}" in verify.guest_script(sized)


def test_every_guest_address_is_asked_for_once_by_a_guest_of_its_subnet():
    """A duplicate address answers pings: only an ARP that hears two MACs shows it (verify._held_once)."""
    lab = model.resolve(pipeline.load(str(REPO / "examples" / "three-nodes.yaml")))
    unique = [p for p in verify.probes(lab) if p.unique]
    subnets = {}
    for d in lab.domains:
        for n in d.nics:
            for a in n.addresses if n.kind == "ovs" else ():
                subnets.setdefault((n.tag or 0, ipaddress.IPv4Interface(a).network), []).append((d.name, a.split("/")[0]))
    shared = {a for held in subnets.values() if len(held) > 1 for _, a in held}  # a guest alone has nobody to ask
    assert {p.address for p in unique} == shared and len(unique) == len(shared)
    assert len({p.source for p in unique}) == len(unique)  # one ARP a guest
    for p in unique:
        assert p.borrow.split("/")[0] != p.address and p.dev  # asked as the asker's own address, out of its NIC
    assert verify.guest_script(unique[:1]).endswith(f"={unique[0].address}@{unique[0].dev}={unique[0].borrow.split('/')[0]}")


def test_isolation_is_checked_by_one_guest_per_node_bridge_and_vlan():
    """Isolation is the bridge's and the switch's, which a VLAN's guests on a node share: the first
    user VM of each (node, bridge, VLAN) checks it; a port in another VLAN fails its own probes."""
    lab = model.resolve(pipeline.load(str(REPO / "bench/topologies/cluster-4x24.yaml")))
    probes = verify.probes(lab)
    guards = {p.source.name for p in probes if not p.expect}
    domains = {d.name: d for d in lab.domains}
    vlans = {(d.node, n.source, n.tag or 0) for d in lab.domains if d.role == "uvm" for n in d.nics if n.kind == "ovs"}
    assert len(guards) == len(vlans)
    assert {(domains[g].node, domains[g].nics[0].source, domains[g].nics[0].tag or 0) for g in guards} == vlans
