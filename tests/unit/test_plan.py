"""Golden plans against recorded host states; idempotency, differences only, deletes of owned objects only."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from labkit import pipeline, plan, render
from labkit.hoststate import HostState, SeenBridge, SeenLink

from ..conftest import REPO
from .hostsim import state_after

STATES = REPO / "tests/hoststates"
GOLDEN = REPO / "tests/golden/plans"
HOST_ADAPT = render.Adaptation(domain_type="qemu", cpu_passthrough=False, locked_memory=False, passthrough=False)


def recorded(name: str) -> HostState:
    return HostState.from_json((STATES / f"{name}.json").read_text())


def up_plan(host: HostState, path: str | None = None) -> tuple[pipeline.Desired, plan.Plan]:
    desired = pipeline.desire(pipeline.load(path), host, HOST_ADAPT)
    return desired, pipeline.plan_up(desired, host)


def test_state_json_round_trips():
    desired, _ = up_plan(HostState())
    state = state_after(desired.lab, desired.docs, recorded("debian-fresh"))
    assert HostState.from_json(state.to_json()) == state


@pytest.mark.parametrize("example", [None] + sorted(str(p.relative_to(REPO)) for p in (REPO / "examples").glob("*.yaml")))
def test_golden_plan_on_a_fresh_debian_host(example, golden):
    desired, the_plan = up_plan(recorded("debian-fresh"), example)
    text = str(the_plan) + "\n\ndeviations:\n" + "".join(f"  {d}\n" for d in desired.deviations)
    golden(GOLDEN / f"fresh-{Path(example).stem if example else 'default'}.txt", text)


def test_fallback_names_on_debian():
    desired, _ = up_plan(recorded("debian-fresh"))
    local = next(n for n in desired.lab.networks if n.kind == "local")
    assert local.name == "NTNX-Local-Network" and local.bridge != "virbr0"  # Debian's default holds virbr0
    uplinks = {v.peer for v in desired.lab.veths if v.purpose == "uplink"}
    assert "eth0" not in uplinks and {"eth1", "eth2", "eth3"} <= uplinks  # the workstation's NIC keeps eth0
    assert {b.name for b in desired.lab.bridges} == {"br0", "seed-tor"}


def test_second_up_plans_nothing():
    host = recorded("debian-fresh")
    desired, _ = up_plan(host)
    after = state_after(desired.lab, desired.docs, host)
    _, again = up_plan(after)
    assert again.empty, str(again)
    assert str(again) == "lab seed: nothing to do, the host already matches"


def test_changed_topology_plans_only_the_difference(tmp_path, golden):
    host = recorded("debian-fresh")
    desired, _ = up_plan(host)
    after = state_after(desired.lab, desired.docs, host)
    text = (REPO / "examples/seed.yaml").read_text()
    text = text.replace("vlans: [0, 32]", "vlans: [0, 32, 40]").replace(
        "    nics: [{network: vlan32, ip: 10.32.0.11/24}]",
        "    nics: [{network: vlan40, ip: 10.40.0.11/24}]\n  - {name: uvm32b, node: DRM-3060-G4-1-1, nics: [{network: vlan32}]}")
    text = text.replace("  - {name: vlan32, vlan: 32, bridge: br0}", "  - {name: vlan32, vlan: 32, bridge: br0}\n  - {name: vlan40, vlan: 40}")
    changed = tmp_path / "changed.yaml"
    changed.write_text(text)
    _, diff = up_plan(after, str(changed))
    golden(GOLDEN / "changed-default.txt", str(diff) + "\n")
    kinds = {(a.verb, a.kind, a.name) for a in diff.actions}
    assert ("update", "domain", "uvm32") in kinds and ("create", "domain", "uvm32b") in kinds
    assert not any(a.kind == "netns" or a.verb == "delete" for a in diff.actions)
    # the new network is a portgroup of the bridge's libvirt network: only that network changes
    assert [a.name for a in diff.actions if a.kind == "network"] == ["VM-Network"]


def test_down_deletes_only_the_labs_objects(golden):
    host = recorded("debian-fresh")
    desired, _ = up_plan(host)
    seed_up = state_after(desired.lab, desired.docs, host)
    other = pipeline.desire(pipeline.load(str(REPO / "examples/lacp.yaml")), seed_up, HOST_ADAPT)
    both = state_after(other.lab, other.docs, seed_up)
    down = plan.plan_down("seed", both)
    golden(GOLDEN / "down-default.txt", str(down) + "\n")
    seed_objects = {b.name for b in desired.lab.bridges} | {n.name for n in desired.lab.networks} | \
        {d.name for d in desired.lab.domains} | {ns.name for ns in desired.lab.namespaces} | \
        {b.name for b in desired.lab.linux_bridges} | {"seed"}  # "seed": the lab's acli relay
    assert {a.name for a in down.actions if a.kind != "veth"} == seed_objects
    assert "default" not in {a.name for a in down.actions}


def test_foreign_objects_holding_private_names_are_left_alone():
    """Something not the lab's holds names the lab would give its own objects: the lab's are salted
    around them, and the plan never touches them."""
    host = replace(recorded("debian-fresh"),
                   bridges=(SeenBridge("seed-tor", None, "netdev"), SeenBridge("brx", None, "netdev", (), ("seed-n1-host",))))
    desired, todo = up_plan(host)
    names = {b.name for b in desired.lab.bridges} | {p.name for b in desired.lab.bridges for p in b.ports}
    assert not names & {"seed-tor", "seed-n1-host", "brx"}
    assert any(b.role == "tor" and b.name.startswith("seed-tor") for b in desired.lab.bridges)
    assert not [a for a in todo.actions if {a.name, a.where} & {"seed-tor", "seed-n1-host", "brx"}]


def test_another_labs_br0_makes_this_lab_fall_back():
    host = recorded("debian-fresh")
    first = pipeline.desire(pipeline.load(str(REPO / "examples/lacp.yaml")), host, HOST_ADAPT)
    after = state_after(first.lab, first.docs, host)
    desired, _ = up_plan(after)
    names = {b.name for b in desired.lab.bridges}
    assert "br0" not in names and any(n.startswith("br0-") for n in names)
    assert any("br0" in d.what for d in desired.lab.deviations)


def test_actions_are_ordered_deletes_first_then_dependencies():
    _, the_plan = up_plan(recorded("debian-fresh"))
    ranks = [a.rank for a in the_plan.actions]
    assert ranks == sorted(ranks)
    kinds = [a.kind for a in the_plan.actions]
    assert kinds.index("netns") < kinds.index("veth") < kinds.index("ovs-bridge") < kinds.index("network") < kinds.index("domain")


def test_links_a_killed_up_left_unmarked_are_adopted_through_its_intents():
    host = recorded("debian-fresh")
    desired, _ = up_plan(host)
    veth = next(v for v in desired.lab.veths if v.purpose == "uplink")
    bare = replace(host, links=host.links + (SeenLink(veth.peer, None, None, "veth", up=False, index=71, peer_index=72),
                                             SeenLink(veth.name, None, None, "veth", index=72, peer_index=71)))
    unknown, todo = up_plan(bare)  # without the lab's intents they are someone else's: left alone
    assert veth.name not in {v.name for v in unknown.lab.veths} and veth.name not in {a.name for a in todo.actions}
    adopted = bare.adopt("seed", [(veth.peer, veth.name, veth.netns)])
    _, again = up_plan(adopted)
    assert ("update", "veth", veth.name) in {(a.verb, a.kind, a.name) for a in again.actions}
    down = plan.plan_down("seed", adopted)
    assert len([a for a in down.actions if a.kind == "veth"]) == 1  # one delete for the pair


def test_an_intent_adopts_only_the_pair_it_stood_for():
    """Issue 12, item 3: an intended name held by another link (not the two ends of one veth pair,
    each the other's peer) stays foreign: lab.down never deletes it, lab.up never takes it."""
    host = recorded("debian-fresh")
    desired, _ = up_plan(host)
    veth = next(v for v in desired.lab.veths if v.purpose == "uplink")
    intent = [(veth.peer, veth.name, veth.netns)]
    strangers = (SeenLink(veth.peer, None, None, "veth", index=80, peer_index=81),  # its peer is another link
                 SeenLink(veth.name, None, None, "veth", index=82, peer_index=83))
    lone = (SeenLink(veth.peer, None, None, "dummy", index=90),)  # the name alone
    for links in (strangers, lone):
        seen = replace(host, links=host.links + links).adopt("seed", intent)
        assert all(link.lab is None for link in seen.links if link.name in (veth.peer, veth.name))
        assert not plan.plan_down("seed", seen).actions


def test_a_pair_killed_between_marking_its_two_ends_is_adopted_whole():
    """lab.up marks a new pair's root end, then its namespace end: killed in between, the namespace
    end is unmarked. It is still the lab's (its peer is the lab's, the names are intended); a pair
    whose other end is another lab's stays foreign."""
    host = recorded("debian-fresh")
    desired, _ = up_plan(host)
    veth = next(v for v in desired.lab.veths if v.purpose == "gateway")
    intent = [(veth.peer, veth.name, veth.netns)]
    half = (SeenLink(veth.peer, None, veth.alias, "veth", index=71, peer_index=72),
            SeenLink(veth.name, veth.netns, None, "veth", index=72, peer_index=71))
    seen = replace(host, links=host.links + half).adopt("seed", intent)
    assert {link.alias for link in seen.links if (link.netns, link.name) in ((None, veth.peer), (veth.netns, veth.name))} == {veth.alias}
    up_plan(seen)  # no "already exists and is not lab seed's"
    down = plan.plan_down("seed", seen)
    assert [a.name for a in down.actions if a.kind == "veth"] == [veth.peer]
    another = (replace(half[0], alias=veth.alias.replace(":seed:", ":other:")), half[1])
    seen = replace(host, links=host.links + another).adopt("seed", intent)
    assert next(link for link in seen.links if link.name == veth.name).alias is None


def test_a_linux_bridge_killed_before_its_mark_is_adopted():
    """The local network's bridge is made, then marked in a second request: killed in between, it
    is unmarked; the intent written before makes it the lab's (not a foreign name to salt around,
    and lab.down removes it)."""
    host = recorded("debian-fresh")
    desired, _ = up_plan(host)
    (bridge,) = desired.lab.linux_bridges
    unmarked = replace(host, links=host.links + (SeenLink(bridge.name, None, None, "bridge", index=80),))
    seen = unmarked.adopt("seed", [(bridge.name, bridge.name, None)])
    again, _ = up_plan(seen)
    assert [b.name for b in again.lab.linux_bridges] == [bridge.name]  # kept, not salted around
    assert [a.name for a in plan.plan_down("seed", seen).actions if a.kind == "linux-bridge"] == [bridge.name]
    assert plan.plan_down("seed", unmarked.adopt("seed", [])).actions == plan.plan_down("seed", host).actions


def test_a_lab_keeps_its_fallback_names_when_the_neighbour_that_forced_them_goes():
    """Issue 11, item 2: lab B fell back because lab A held the AHV names; once A is down, B's
    names stay and its plan is empty (they used to flip back, and every domain was recreated)."""
    host = recorded("debian-fresh")
    topo_a = pipeline.load(str(REPO / "examples/lacp.yaml"))
    topo_b = topo_a.model_copy(update={"name": "lacp-b"})
    a = pipeline.desire(topo_a, host, HOST_ADAPT)
    with_a = state_after(a.lab, a.docs, host)
    b = pipeline.desire(topo_b, with_a, HOST_ADAPT)
    assert {d.name for d in b.lab.domains}.isdisjoint(d.name for d in a.lab.domains)
    with_both = state_after(b.lab, b.docs, with_a)
    b_alone = replace(with_both, **{field: tuple(o for o in getattr(with_both, field) if o.lab != a.lab.name)
                                    for field in ("bridges", "links", "namespaces", "networks", "domains")})
    again = pipeline.desire(topo_b, b_alone, HOST_ADAPT)
    assert [d.name for d in again.lab.domains] == [d.name for d in b.lab.domains]
    assert [br.name for br in again.lab.bridges] == [br.name for br in b.lab.bridges]
    assert pipeline.plan_up(again, b_alone).empty
    assert any("keeps it until lab.down" in str(d) for d in again.lab.deviations)


def test_private_names_of_two_labs_never_meet():
    """Issue 11, item 5: lab `a`'s uplink `tor` on node 1 and lab `a-n1`'s switch were both `a-n1-tor`."""
    host = recorded("debian-fresh")
    seed = pipeline.load(None)
    other = pipeline.desire(seed.model_copy(update={"name": "a-n1"}), host, HOST_ADAPT)
    host = state_after(other.lab, other.docs, host)
    node = seed.nodes[0]
    uplinks = {("tor" if name == "eth0" else name): speed for name, speed in node.uplinks.items()}
    mine = seed.model_copy(update={"name": "a", "nodes": [node.model_copy(update={"uplinks": uplinks})]})
    desired, todo = up_plan_of(mine, host)
    ours = {v.name for v in desired.lab.veths} | {v.peer for v in desired.lab.veths} | {b.name for b in desired.lab.bridges}
    theirs = {v.name for v in other.lab.veths} | {v.peer for v in other.lab.veths} | {b.name for b in other.lab.bridges}
    assert "a-n1-tor" in theirs and not (ours & theirs) - {"br0", "virbr0", "eth0"}
    assert not any(a.verb == "delete" for a in todo.actions)


def up_plan_of(topo, host):
    desired = pipeline.desire(topo, host, HOST_ADAPT)
    return desired, pipeline.plan_up(desired, host)


def test_drift_the_digest_does_not_show_is_planned_and_named():
    """Issue 12, item 8: a hand-changed port tag, and definitions edited with their metadata kept
    (virsh edit), are read back and repaired; the plan says what changed on the host."""
    host = recorded("debian-fresh")
    desired, _ = up_plan(host)
    after = state_after(desired.lab, desired.docs, host)
    assert pipeline.plan_up(desired, after).empty
    uvm = next(d for d in desired.lab.domains if d.role == "uvm")
    bridges = tuple(replace(b, vm_ports=tuple(replace(v, tag=0) if v.iface_id == uvm.nics[0].interfaceid else v
                                              for v in b.vm_ports)) for b in after.bridges)
    domains = tuple(replace(d, facts=replace(d.facts, memory_kib=2 * d.facts.memory_kib)) if d.name == uvm.name else d
                    for d in after.domains)
    networks = tuple(replace(n, facts=replace(n.facts, portgroups=n.facts.portgroups[:1])) if n.name == "VM-Network" else n
                     for n in after.networks)
    drifted = replace(after, bridges=bridges, domains=domains, networks=networks)
    assert [str(a) for a in pipeline.plan_up(desired, drifted).actions] == [
        "~ update network      VM-Network  (changed on the host: portgroups VM-Network, want VM-Network, vlan32 (VLAN 32))",
        f"~ update domain       {uvm.name}  (changed on the host: memory 256 MiB, want 128 MiB)",
    ]
    only_tag = replace(after, bridges=bridges)
    assert [str(a) for a in pipeline.plan_up(desired, only_tag).actions] == [
        f"~ update vm-port      br0/{uvm.nics[0].target}  (changed on the host: tag 0, want tag 32)"]


def test_every_kind_of_action_has_its_step():
    from labkit.apply import STEPS

    assert set(STEPS) == set(plan.ORDER)


@pytest.mark.parametrize("example", [None] + sorted(str(p.relative_to(REPO)) for p in (REPO / "examples").glob("*.yaml")))
def test_every_veth_is_the_same_way_round(example):
    """model.Veth: `peer` is the end on the bridge the pair serves, in the workstation's namespace;
    `name` is the far end, in a namespace or (uplinks, the inter-switch link) on another bridge.
    An uplink's `peer` is the node's NIC (eth2), on a bridge unless the node leaves it unused."""
    lab = up_plan(recorded("debian-fresh"), example)[0].lab
    bridge_of = {p.name: b.name for b in lab.bridges for p in b.ports for i in p.interfaces if i.name == p.name}
    bridge_of.update({i.name: b.name for b in lab.bridges for p in b.ports for i in p.interfaces})
    for veth in lab.veths:
        served = veth.peer_master or bridge_of.get(veth.peer)
        assert served or veth.purpose == "uplink", f"{veth.purpose} {veth.peer}: on no bridge"
        if veth.netns is None:
            far = bridge_of.get(veth.name)
            assert far and far != served, f"{veth.purpose} {veth.name}: not on another bridge"
            assert {bridge.role for bridge in lab.bridges if bridge.name == far} == {"tor"}, veth
        else:
            assert veth.name not in bridge_of and (veth.addresses or veth.purpose == "local"), veth
