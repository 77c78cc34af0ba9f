"""IPAM (labkit/ipam.py), the DHCP server a node runs for it (labkit/host/dhcp.py's configuration)
and lab.verify's DHCP checks (labkit/dhcpcheck.py): pure, on the slb-vlans example."""

from __future__ import annotations

import ipaddress
import time

import pytest

from labkit import dhcpcheck, ipam, ledger, model, nic_identity, pipeline
from labkit.host import dhcp
from labkit.topology import IpConfig, crosscheck

from ..conftest import REPO

SLB = str(REPO / "examples/slb-vlans.yaml")


def managed_topology(pool="10.40.0.50 10.40.0.52", vms=("a", "b")):
    topo = pipeline.load(SLB)
    nets = [n.model_copy(update={"ip_config": n.ip_config.model_copy(update={"pool": [pool]})}) if n.ip_config else n
            for n in topo.networks]
    extra = [topo.vms[0].model_copy(update={"name": name, "nics": [topo.vms[1].nics[0].model_copy(update={"ip": None})]})
             for name in vms]
    return topo.model_copy(update={"networks": nets, "vms": topo.vms + extra})


def addresses(topo):
    return {vm.name: str(vm.nics[0].ip) for vm in topo.vms if vm.nics and vm.nics[0].network == "mgmt"}


def test_pool_addresses_in_order_skipping_requested_ones():
    topo = managed_topology()
    got = addresses(ledger.assign(topo).topo)
    assert got == {"mon1": "10.40.0.41/24", "a": "10.40.0.50/24", "b": "10.40.0.51/24"}


def test_a_nic_keeps_its_address_when_another_goes():
    before = ledger.assign(managed_topology())
    after = ledger.assign(managed_topology(vms=("b",)), before.ledger)
    assert addresses(after.topo)["b"] == "10.40.0.51/24"  # not moved down to the freed .50
    again = ledger.assign(managed_topology(vms=("b", "c")), after.ledger)
    assert addresses(again.topo)["c"] == "10.40.0.50/24"  # the freed address went back to the pool


def test_exhausted_pool_is_one_clear_error():
    with pytest.raises(ipam.IpamError, match=r"^the DHCP pool of network mgmt is exhausted \(1 addresses, all assigned\)"):
        ledger.assign(managed_topology(pool="10.40.0.50 10.40.0.50"))


def with_nic(topo, vm_name, nic):
    return topo.model_copy(update={"vms": [vm.model_copy(update={"nics": [*vm.nics, nic]}) if vm.name == vm_name else vm
                                           for vm in topo.vms]})


def test_existing_bindings_are_honoured_before_a_new_nic_gets_one():
    """x on .50 and y on .51; a second NIC for x must not take y's .51 (y's guest holds it)."""
    first = ledger.assign(managed_topology(vms=("x", "y")))
    assert addresses(first.topo) == {"mon1": "10.40.0.41/24", "x": "10.40.0.50/24", "y": "10.40.0.51/24"}
    nic = first.topo.vms[-1].nics[0].model_copy(update={"mac": None, "ip": None})
    second = ledger.assign(with_nic(nic_identity.pin(managed_topology(vms=("x", "y"))), "x", nic), first.ledger)
    bound = {(b.vm, str(b.address)) for b in second.ledger.bindings}
    assert ("y", "10.40.0.51") in bound and ("x", "10.40.0.50") in bound and ("x", "10.40.0.52") in bound
    assert second.notes == ()


def test_addresses_the_lab_holds_are_never_handed_out():
    """A pool over the node's host IP, its CVM's address and a trunk NIC's address skips all three."""
    topo = managed_topology(pool="10.40.0.50 10.40.0.60", vms=("a",))
    node = topo.nodes[0].model_copy(update={
        "host_ip": ipaddress.IPv4Interface("10.40.0.50/24"), "host_vlan": 40, "gateway": ipaddress.IPv4Address("10.40.0.1"),
        "cvm": topo.nodes[0].cvm.model_copy(update={"ip": ipaddress.IPv4Interface("10.40.0.51/24"), "vlan": 40})})
    router = next(vm for vm in topo.vms if vm.name == "router")
    trunk = router.nics[0].model_copy(update={"ips": {40: ipaddress.IPv4Interface("10.40.0.52/24")}})
    topo = topo.model_copy(update={"nodes": [node], "vms": [vm.model_copy(update={"nics": [trunk]}) if vm is router else vm
                                                             for vm in topo.vms]})
    assert addresses(ledger.assign(topo).topo)["a"] == "10.40.0.53/24"


def test_a_subnet_change_rebinds_the_network_s_nics_and_says_so():
    first = ledger.assign(managed_topology(vms=("a",)))
    topo = nic_identity.pin(managed_topology(vms=("a",)))
    moved = IpConfig(network="10.41.0.0/24", gateway="10.41.0.1", pool=["10.41.0.50 10.41.0.60"])
    topo = topo.model_copy(update={
        "networks": [n.model_copy(update={"ip_config": moved}) if n.ip_config else n for n in topo.networks],
        "vms": [vm.model_copy(update={"nics": [nic.model_copy(update={"ip": ipaddress.IPv4Interface("10.41.0.42/24")})
                                               if nic.network == "mgmt" and nic.ip else nic for nic in vm.nics]})
                for vm in topo.vms],
        "switch": topo.switch.model_copy(update={"gateways": {**topo.switch.gateways, 40: ipaddress.IPv4Interface("10.41.0.1/24")}})})
    second = ledger.assign(topo, first.ledger)
    assert addresses(second.topo)["a"] == "10.41.0.50/24"
    assert any("10.40.0.50 -> 10.41.0.50 (the subnet is now 10.41.0.0/24)" in note for note in second.notes)
    assert crosscheck(second.topo) == []  # the state it leaves is valid


def test_a_binding_outlives_a_file_without_macs_and_a_deleted_first_nic():
    """The lab's NICs were given MACs (acli, an earlier lab.up); the same file without MACs, and
    the file with a VM's first NIC removed, keep the other NICs' MACs and addresses."""
    topo = managed_topology(vms=("a",))
    two = with_nic(topo, "a", topo.vms[-1].nics[0])  # a: two NICs on mgmt
    two = two.model_copy(update={"vms": [vm.model_copy(update={"nics": [vm.nics[0].model_copy(update={"network": "vlan32"}),
                                                                          *vm.nics[1:]]}) if vm.name == "a" else vm
                                         for vm in two.vms]})
    first = ledger.assign(nic_identity.pin(two))
    pinned = first.topo
    second_nic = next(vm for vm in pinned.vms if vm.name == "a").nics[1]
    without_macs = two  # the same file again: no MACs, matched to the NICs they were
    again = ledger.assign(nic_identity.pin(without_macs, pinned), first.ledger)
    assert next(vm for vm in again.topo.vms if vm.name == "a").nics[1] == second_nic
    dropped = two.model_copy(update={"vms": [vm.model_copy(update={"nics": vm.nics[1:]}) if vm.name == "a" else vm
                                             for vm in two.vms]})
    third = ledger.assign(nic_identity.pin(dropped, pinned), first.ledger)
    (left,) = next(vm for vm in third.topo.vms if vm.name == "a").nics
    assert (left.mac, left.ip) == (second_nic.mac, second_nic.ip)


def test_pools_are_bounded_and_walked_lazily():
    """A /12 subnet is refused in one sentence; a /16 pool of 65,000 addresses is counted, not listed."""
    topo = managed_topology()
    big = IpConfig(network="10.0.0.0/12", gateway="10.0.0.1", pool=["10.0.0.10 10.15.255.250"])
    problems = crosscheck(topo.model_copy(update={"networks": [n.model_copy(update={"ip_config": big}) if n.ip_config else n
                                                               for n in topo.networks]}))
    assert any("has 1,048,576 addresses; a lab's managed network holds at most 65,536: use a /16 or longer prefix" in m
               for _, m in problems)
    wide = IpConfig(network="10.40.0.0/16", gateway="10.40.0.1", pool=["10.40.0.2 10.40.255.250"])
    started = time.monotonic()
    assert ipam.free_count(wide, {ipaddress.IPv4Address("10.40.0.9")}) == (65528, 65529)
    assert ipam.lowest_free("mgmt", wide, {ipaddress.IPv4Address("10.40.0.2")}) == ipaddress.IPv4Address("10.40.0.3")
    assert time.monotonic() - started < 0.05


def test_requested_addresses_are_checked_with_ahvs_words():
    ipc = pipeline.load(SLB).networks[1].ip_config
    a = ipaddress.IPv4Address
    with pytest.raises(ipam.IpamError, match="^Cannot assign IP address on an unmanaged network$"):
        ipam.check_request("vlan32", None, a("10.32.0.9"), set())
    with pytest.raises(ipam.IpamError, match="is not in network mgmt"):
        ipam.check_request("mgmt", ipc, a("10.41.0.9"), set())
    with pytest.raises(ipam.IpamError, match="already assigned"):
        ipam.check_request("mgmt", ipc, a("10.40.0.9"), {a("10.40.0.9")})
    ipam.check_request("mgmt", ipc, a("10.40.0.9"), set())  # outside the pool, inside the subnet: fine


def test_dhcp_server_is_the_last_usable_address_and_pool_counts():
    ipc = pipeline.load(SLB).networks[1].ip_config
    assert str(ipam.dhcp_server(ipc)) == "10.40.0.254"
    assert ipam.free_count(ipc, {ipaddress.IPv4Address("10.40.0.50"), ipaddress.IPv4Address("10.40.0.41")}) == (49, 50)


def test_dnsmasq_configuration_golden(golden):
    lab = model.resolve(managed_topology())
    (server,) = lab.dhcp_servers
    text = dhcp.config(lab.name, server)
    golden(REPO / "tests/golden/dhcp/slb-node1.conf", text)
    assert "dhcp-host=" + lab.domain("a").nics[0].mac + ",10.40.0.50,a" in text


def test_flows_send_managed_dhcp_to_the_node_and_drop_vm_offers():
    lab = model.resolve(managed_topology())
    flows = next(b for b in lab.bridges if b.name == "br0").flows
    mac = lab.domain("a").nics[0].mac
    port = next(s for s in lab.dhcp_servers[0].subnets).ifname
    assert f"udp,dl_src={mac},tp_src=68,tp_dst=67,actions=output:slb-n1-d40" in " ".join(flows)
    assert any(f"udp,dl_src={mac},tp_src=67,actions=drop" in f for f in flows)
    router = lab.domain("router").nics[0].mac  # trunks VLAN 40: its offers on it are dropped too
    assert any(f"dl_vlan=40,udp,dl_src={router},tp_src=67,actions=drop" in f for f in flows)
    assert port == "dhcp40" and not any(lab.domain("web1").nics[0].mac in f for f in flows)


def test_guest_asks_for_dhcp_on_managed_nics_only():
    from labkit import render

    lab = model.resolve(managed_topology())
    assert "labkit.nic.eth0=" + lab.domain("a").nics[0].mac + ",dhcp" in render.kernel_cmdline(lab.domain("a"))
    assert ",10.32.0.41/24" in render.kernel_cmdline(lab.domain("web1"))


def test_dhcp_checks_pass_and_fail_on_what_the_guests_say():
    lab = model.resolve(managed_topology())
    checks, rogues = dhcpcheck.checks(lab)
    assert [(c.kind, c.source.name) for c in checks if c.kind != "silent"] == \
        [("lease", "mon1"), ("lease", "a"), ("lease", "b"), ("alone", "mon1")]
    assert [(r.source.name, r.dev, r.address) for r in rogues] == [("a", "eth0", "10.40.0.253")]
    mine = [c for c in checks if c.source.name == "mon1" and c.kind != "silent"]
    good = ("L0 ip=10.40.0.41/24 server=10.40.0.254 router=10.40.0.1 dns= domain= search= tftp= bootfile=\nL0 held\n"
            "D1 offer 10.40.0.254 10.40.0.41\n")
    assert all(o.ok for o in dhcpcheck.evaluate(mine, good))
    bad = "L0 ip=10.40.0.51/24 server=10.40.0.254\nD1 offer 10.40.0.254 10.40.0.41\nD1 offer 10.40.0.253 10.40.0.252\n"
    got = dhcpcheck.evaluate(mine, bad)
    assert not got[0].ok and "ip '10.40.0.51/24' (expected '10.40.0.41/24')" in got[0].detail
    assert "10.40.0.41/24 is not on eth0" in got[0].detail
    assert not got[1].ok and got[1].detail.startswith("it heard the rogue")
    assert dhcpcheck.evaluate(mine, "")[1].detail == "its node did not offer 10.40.0.41"
    script = dhcpcheck.guest_script(mine)
    assert "cat /run/dhcp.eth0" in script and script.endswith("lkdhcp -t 800 eth0 | sed 's/^/D1 /' &")
    silent = [c for c in checks if c.kind == "silent"]
    assert {c.source.name for c in silent} == {"web1", "iso1"}
    assert not dhcpcheck.evaluate(silent[:1], "D0 offer 10.9.9.9 10.9.9.8\n")[0].ok
