"""manage_ovs update_uplinks on the topology (pure), and its output formats."""

from __future__ import annotations

import pytest

from labkit import model, pipeline, topology
from labkit.errors import LabkitError
from labkit.manage_ovs import BondState, UplinkRequest, format_interfaces, format_uplinks, update_uplinks

from ..conftest import REPO

NODE = "DRM-3060-G4-1-1"


def seed():
    return pipeline.load(None)


def bond_after(topo, **flags):
    changed = update_uplinks(topo, NODE, UplinkRequest(**flags))
    assert topology.crosscheck(changed) == []
    return changed.nodes[0].bridges


def test_lacp_with_fallback_as_prism_sets_it():
    bond = bond_after(seed(), interfaces="10g", bond_mode="balance-tcp", lacp_mode="fast", lacp_fallback="true")["br0"].bond
    assert (bond.name, bond.interfaces, bond.mode, bond.lacp, bond.lacp_time, bond.lacp_fallback) == \
        ("bond0", ["eth2", "eth3"], "balance-tcp", "active", "fast", True)


def test_omitted_bond_mode_reverts_to_active_backup():
    lacp = update_uplinks(seed(), NODE, UplinkRequest(interfaces="10g", bond_mode="balance-tcp"))
    bond = bond_after(lacp, interfaces="eth2,eth3")["br0"].bond
    assert bond.mode == "active-backup" and bond.lacp == "off"


def test_interfaces_move_between_bridges_and_new_bonds_are_named_bridge_up():
    topo = pipeline.load(str(REPO / "examples/two-bridges.yaml"))
    bridges = update_uplinks(topo, "node1", UplinkRequest(interfaces="eth0,eth1,eth2,eth3")).nodes[0].bridges
    assert bridges["br0"].bond.interfaces == ["eth0", "eth1", "eth2", "eth3"] and bridges["br1"].bond is None
    fresh = seed()
    fresh_node = fresh.nodes[0].model_copy(update={"bridges": {"br0": fresh.nodes[0].bridges["br0"].model_copy(update={"bond": None})}})
    fresh = fresh.model_copy(update={"nodes": [fresh_node]})
    assert bond_after(fresh, interfaces="1g")["br0"].bond.name == "br0-up"


def test_mtu_goes_to_the_bridge_and_the_model_carries_it_to_uplinks_and_guests():
    changed = update_uplinks(seed(), NODE, UplinkRequest(interfaces="10g", mtu=9000))
    lab = model.resolve(changed)
    assert {v.mtu for v in lab.veths if v.purpose == "uplink" and v.peer in ("eth2", "eth3")} == {9000}
    assert all(nic.mtu == 9000 for d in lab.domains for nic in d.nics if nic.kind == "ovs")


@pytest.mark.parametrize("flags, message", [
    (dict(interfaces=""), "needs --interfaces"),
    (dict(interfaces="40g"), "no 40g uplinks on this node"),
    (dict(interfaces="eth2,eth9"), "eth9: not an uplink of this node"),
    (dict(interfaces="10g", bond_mode="lacp"), "--bond_mode lacp is not a bond mode"),
    (dict(interfaces="10g", bridge_name="br7"), "has no bridge br7"),
    (dict(interfaces="10g", lacp_mode="medium"), "--lacp_mode medium is not valid"),
])
def test_bad_requests_say_what_is_valid(flags, message):
    with pytest.raises(LabkitError, match=message):
        update_uplinks(seed(), NODE, UplinkRequest(**flags))


def test_formats_match_ahv():
    text = format_uplinks([BondState("br0", "br0-up", "active-backup", ("eth3", "eth2"), "off", False, "slow")])
    assert text == ("Bridge: br0\n  Bond: br0-up\n    bond_mode: active-backup\n    interfaces: eth3 eth2\n"
                    "    lacp: off\n    lacp-fallback: false\n    lacp_speed: slow")
    assert format_interfaces([("eth0", "1g", True), ("eth2", "10g", False)]).splitlines() == [
        "name  mode link speed", "eth0  1000 True  1000", "eth2 10000 False    0"]
