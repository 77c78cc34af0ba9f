"""Hosts on a real three-node lab (examples/three-nodes.yaml): a live migration keeps the guest
running (its uptime continues) and a ping from a VM on a third node loses few packets; the VM's
port leaves one node's br0 for the other's, same VLAN; maintenance mode empties a node, live, and
exit brings its VMs back. Tests run in file order against one lab."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

from ..conftest import REPO
from .conftest import invoke, lab_up_for_module, sh

LAB = "trio"
TOPOLOGY = str(REPO / "examples/three-nodes.yaml")
PINGS, INTERVAL = 40, 0.25


@pytest.fixture(scope="module")
def lab():
    yield from lab_up_for_module(LAB, TOPOLOGY)


def acli(line: str) -> str:
    return invoke("acli", "--lab", LAB, "-c", line).stdout


def guest(vm: str, command: str) -> str:
    return invoke("lab.console", vm, "--lab", LAB, "--cmd", command).stdout


def uptime(vm: str) -> float:
    return float(guest(vm, "cut -d' ' -f1 /proc/uptime"))


def bridge_of(vm: str) -> tuple[str, int]:
    """The OVS bridge and VLAN tag of the VM's first NIC, found by its MAC."""
    mac = re.search(r'^\s*mac_addr: "([0-9a-f:]+)"', acli(f"vm.nic_list {vm}") + acli(f"vm.get {vm}"), re.M).group(1)
    rows = json.loads(sh("ovs-vsctl --format=json --columns=name,external_ids list Interface"))["data"]
    iface = next(name for name, ext in rows if ["attached-mac", mac] in ext[1])
    return sh(f"ovs-vsctl port-to-br {iface}").strip(), int(sh(f"ovs-vsctl get Port {iface} tag"))


def node_bridge(node: str) -> str:
    """The OVS bridge that is `node`'s br0 (its name on the host may carry a suffix)."""
    for name in sh("ovs-vsctl list-br").split():
        ext = sh(f"ovs-vsctl get Bridge {name} external_ids")
        if f'labkit-lab={LAB}' in ext.replace('"', "") and f'labkit-node={node}' in ext.replace('"', "") \
                and "labkit-ahv-name=br0" in ext.replace('"', ""):
            return name
    raise AssertionError(f"no br0 of {node} in {sh('ovs-vsctl list-br')}")


def host_of(vm: str) -> str:
    return re.search(r'^  host_name: "([^"]+)"', acli(f"vm.get {vm}"), re.M).group(1)


def test_a_live_migration_keeps_the_guest_and_loses_few_pings(lab):
    assert host_of("web1") == "node1" and bridge_of("web1") == (node_bridge("node1"), 32)
    before = uptime("web1")
    # web3 (node3) pings web1 through the switch while web1 moves from node1 to node2
    ping = subprocess.Popen([sys.executable, "-m", "invoke", "lab.console", "web3", "--lab", LAB, "--cmd",
                             f"ping -c {PINGS} -i {INTERVAL} 10.32.0.31"], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(2)
        out = acli("vm.migrate web1 host=node2 live=true")
        assert out.splitlines()[-1] == "web1: complete", out
    finally:
        printed, _ = ping.communicate(timeout=120)
    sent, received = map(int, re.search(r"(\d+) packets transmitted, (\d+) packets received", printed).groups())
    lost = sent - received
    # the pause is a save and a restore (measured: 1 of 40 lost, the pause under half a second under TCG)
    assert sent == PINGS and lost <= 4, f"{lost} of {sent} pings lost:\n{printed}"
    assert uptime("web1") > before  # the same guest, running on: not booted again
    assert host_of("web1") == "node2" and bridge_of("web1") == (node_bridge("node2"), 32)
    invoke("lab.verify", "--lab", LAB)


def test_maintenance_mode_empties_a_node_and_exit_brings_its_vms_back(lab):
    before = {vm: uptime(vm) for vm in ("web3", "db3")}
    assert acli("host.enter_maintenance_mode_check node3").strip() == '"Ok to enter maintenance mode."'
    acli("host.enter_maintenance_mode node3")
    assert acli("host.list_vms node3").splitlines() == ["VM name  VM UUID"]
    row = next(line.split() for line in acli("host.list").splitlines() if line.startswith("10.59.31.33"))
    assert (row[3], row[6]) == ("EnteredMaintenanceMode", "False")
    for vm in ("web3", "db3"):
        assert host_of(vm) != "node3" and bridge_of(vm)[0] != node_bridge("node3")
        assert uptime(vm) > before[vm]
    assert bridge_of("db3")[1] == 40
    invoke("lab.verify", "--lab", LAB)  # VLAN 40 and 32 still reach their VMs on their new nodes
    acli("host.exit_maintenance_mode node3")
    for vm in ("web3", "db3"):
        assert host_of(vm) == "node3" and bridge_of(vm)[0] == node_bridge("node3")
        assert uptime(vm) > before[vm]
    row = next(line.split() for line in acli("host.list").splitlines() if line.startswith("10.59.31.33"))
    assert (row[3], row[6]) == ("AcropolisNormal", "True")
    invoke("lab.verify", "--lab", LAB)
