"""Customer-style examples built for real: each comes up, verifies from inside its guests, and
OVS holds what its file says (bond modes, LACP, VLAN tags, MTU)."""

from __future__ import annotations

import json
import re
import time

import pytest

from ..conftest import REPO
from .conftest import invoke, labkit_leftovers, sh


def up(example: str, *extra: str) -> str:
    path = REPO / "examples" / f"{example}.yaml"
    name = re.search(r"^name: (\S+)", path.read_text(), re.M).group(1)
    invoke("lab.down", "--lab", name)
    run = invoke("lab.up", "--topology", str(path), *extra)
    assert f"lab {name} verified" in run.stderr
    return name


def down(name: str) -> None:
    invoke("lab.down", "--lab", name)
    assert labkit_leftovers(name) == []


def bond_of(name: str) -> str:
    return sh(f"ovs-appctl bond/show {name}")


def port(name: str, column: str) -> str:
    return sh(f"ovs-vsctl get Port {name} {column}").strip()


def test_custom_vlan_tags_the_host_and_the_cvm():
    name = up("custom-vlan")
    try:
        assert port("cvlan-n1-host", "tag") == "10"
        cvm_vnet = next(p for p in sh("ovs-vsctl list-ports br0").split() if p.startswith("vnet"))
        assert port(cvm_vnet, "tag") == "10"
        assert "bond_mode: active-backup" in bond_of("br0-up")
    finally:
        down(name)


def test_two_bridges_each_with_its_own_bond():
    name = up("two-bridges")
    try:
        assert "bond_mode: active-backup" in bond_of("br0-up") and "bond_mode: active-backup" in bond_of("br1-up")
        members = re.findall(r"^member (\S+):", bond_of("br1-up"), re.M)
        assert sorted(m.split("-")[0] for m in members) == ["eth0", "eth1"]  # eth0 may carry a fallback suffix
        fw_taps = re.findall(r"<target dev='(tap\d+)'", sh("virsh -c qemu:///system dumpxml fw1"))
        bridges = {sh(f"ovs-vsctl port-to-br {tap}").strip() for tap in fw_taps}
        assert bridges == {"br0", "br1"}  # the firewall VM straddles both physical networks
    finally:
        down(name)


def test_lacp_balance_tcp_negotiates_with_the_top_of_rack():
    name = up("lacp")
    try:
        deadline = time.monotonic() + 30
        while "lacp_status: negotiated" not in bond_of("br0-up"):
            assert time.monotonic() < deadline, sh("ovs-appctl lacp/show")
            time.sleep(1)
        bond = bond_of("br0-up")
        assert "bond_mode: balance-tcp" in bond and "lacp_fallback_ab: true" in bond
        lacp = sh("ovs-appctl lacp/show br0-up")
        assert "status: active negotiated" in lacp and "lacp_time: fast" in lacp
        assert "status: active negotiated" in sh("ovs-appctl lacp/show lacp-n1-br0-up")  # the switch's side
    finally:
        down(name)


@pytest.mark.parametrize("fallback, verifies", [(True, True), (False, False)])
def test_lacp_mismatch_is_decided_by_fallback(tmp_path, fallback, verifies):
    """LACP on the node, none on the switch: with fallback the bond runs active-backup, without it
    no member is enabled and the node is cut off, as on a real switch."""
    text = (REPO / "examples/lacp.yaml").read_text().replace("name: lacp", "name: lacpmis").replace(
        "lacp_fallback: true}", f"lacp_fallback: {str(fallback).lower()}, switch_lacp: false}}")
    path = tmp_path / "mismatch.yaml"
    path.write_text(text)
    invoke("lab.down", "--lab", "lacpmis")
    try:
        invoke("lab.up", "--no-verify", "--topology", str(path))
        time.sleep(5)  # a few LACP periods without an answer
        bond = bond_of("br0-up")
        assert "lacp_status: negotiated" not in bond
        status = json.loads(invoke("lab.status", "--topology", str(path), "--json", expect=1).stdout)
        row = next(o for o in status["objects"] if o["name"] == "br0-up")
        assert "eth2 LACP not negotiated" in row["detail"] and not row["healthy"]
        run = invoke("lab.verify", "--topology", str(path), "--timeout", "60", expect=0 if verifies else 1)
        if not verifies:
            assert "NTNX-node1-CVM cannot reach gw0 (10.59.30.1)" in run.stderr
    finally:
        down("lacpmis")


def test_balance_slb_with_vlans_and_a_trunked_router():
    name = up("slb-vlans")
    try:
        assert "bond_mode: balance-slb" in bond_of("br0-up")
        assert json.loads(port("br0-up", "other_config:bond-rebalance-interval")) == "30000"
        router_tap = re.findall(r"<target dev='(tap\d+)'", sh("virsh -c qemu:///system dumpxml router"))[0]
        assert port(router_tap, "trunks") == "[32, 40]"
        out = invoke("lab.console", "router", "--lab", name, "--cmd", "cat /proc/net/vlan/config").stdout
        assert "eth0.32" in out and "eth0.40" in out
        # mgmt is a managed network: mon1 took its address by DHCP from node1 (dnsmasq in the node's
        # namespace, reached through OpenFlow rules on br0), unmanaged VMs hear no offer, and the
        # router's rogue server (on its eth0.40) is not heard by mon1.
        dhcp = json.loads(invoke("lab.verify", "--lab", name, "--json").stdout)["dhcp"]
        assert {(c["from"], c["check"]) for c in dhcp if c["ok"]} == \
            {("mon1", "lease"), ("mon1", "alone"), ("web1", "silent"), ("iso1", "silent")}
        assert "10.40.0.41" in invoke("lab.console", "mon1", "--lab", name, "--cmd", "cat /run/dhcp.eth0").stdout
        assert "dhcp40" in sh(f"ip netns exec labkit.{name}.node1 ip -o addr show to 10.40.0.254")
        assert "tp_src=68,tp_dst=67 actions=output:" in sh("ovs-ofctl dump-flows br0")
    finally:
        down(name)


def test_jumbo_frames_reach_uplinks_and_guests():
    name = up("jumbo")
    try:
        assert "mtu 9000" in sh("ip link show eth2") and "mtu 9000" in sh("ip link show jumbo-n1-eth2")
        assert invoke("lab.console", "big1", "--lab", name, "--cmd", "cat /sys/class/net/eth0/mtu").stdout.strip() == "9000"
    finally:
        down(name)


def test_two_nodes_behind_one_switch_form_a_cluster_network():
    name = up("two-nodes")
    try:
        nodes = [b for b in sh("ovs-vsctl list-br").split() if b == "br0" or b.startswith("br0-")]
        assert len(nodes) == 2  # the second node's br0 falls back to br0-<hex>
        out = invoke("lab.verify", "--lab", name, "--json").stdout
        checks = {(c["from"], c["to"]) for c in json.loads(out)["checks"] if c["ok"]}
        assert ("NTNX-node1-CVM", "NTNX-node2-CVM eth0") in checks and ("a1", "b1 eth0") in checks
    finally:
        down(name)


def test_native_vlan_on_the_switch_carries_the_untagged_host(tmp_path):
    """The switch's native VLAN is 10: the node sends its host and CVM traffic untagged, the switch
    puts it on VLAN 10, where the gateway is."""
    path = tmp_path / "native.yaml"
    path.write_text("""\
name: native
switch: {vlans: [0, 10], native_vlan: 10, gateways: {10: 10.10.0.1/24}}
nodes:
  - name: node1
    host_ip: 10.10.0.21/24
    gateway: 10.10.0.1
    cvm: {ip: 10.10.0.31/24}
    uplinks: {eth2: 10g, eth3: 10g}
    bridges:
      br0: {bond: {name: br0-up, interfaces: [eth2, eth3]}}
""")
    invoke("lab.down", "--lab", "native")
    try:
        run = invoke("lab.up", "--topology", str(path))
        assert "lab native verified" in run.stderr
        assert port("native-n1-eth2", "vlan_mode") == "native-untagged" and port("native-n1-eth2", "tag") == "10"
    finally:
        down("native")


def test_three_nodes_verify_across_nodes_and_draw(tmp_path):
    name = up("three-nodes")
    try:
        out = invoke("lab.verify", "--lab", name, "--json").stdout
        checks = {(c["from"], c["to"]): c for c in json.loads(out)["checks"]}
        assert checks[("web1", "web3 eth0")]["ok"] and checks[("web3", "web2 eth0")]["ok"]  # VLAN 32 across nodes
        assert checks[("NTNX-node1-CVM", "NTNX-node3-CVM eth0")]["ok"]  # the cluster network
        assert checks[("web1", "gw40")]["expect"] == "blocked" and checks[("web1", "gw40")]["ok"]
        for node in ("node1", "node2", "node3"):  # each node its own local network, same addresses
            assert "inet 192.168.5.1/24" in sh(f"ip netns exec labkit.{name}.{node} ip -4 addr")
        svg = tmp_path / "trio.svg"
        invoke("lab.diagram", "--lab", name, "--out", str(svg))
        assert svg.read_text().count('<g id="clust') == 3 and "labkit.trio.node3" in svg.read_text()
    finally:
        down(name)


def test_dual_homed_cluster_survives_a_whole_switch():
    name = up("four-nodes-dual-tor")
    try:
        invoke("lab.link-down", "tor-b", "all", "--lab", name)
        deadline = time.monotonic() + 30
        while "may_enable: false" not in bond_of("br0-up") or "active-backup" not in bond_of("br0-up"):
            assert time.monotonic() < deadline, bond_of("br0-up")
            time.sleep(1)
        assert re.search(r"member eth3: disabled", bond_of("br0-up")), bond_of("br0-up")
        invoke("lab.verify", "--lab", name)  # every path over switch a alone
        assert "link down" in invoke("lab.status", "--lab", name, expect=1).stdout
        dot = invoke("lab.diagram", "--lab", name, "--format", "dot", "--out", "/dev/stdout").stdout
        assert "quad-isl-b DOWN" in dot
        invoke("lab.link-up", "tor-b", "all", "--lab", name)
        invoke("lab.verify", "--lab", name)
    finally:
        down(name)
