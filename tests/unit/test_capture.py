"""lab.capture's names: each form to the interfaces it listens on, and every mistake one line that
says what there is; tcpdump's command line, the user's values checked before it sees them."""

from __future__ import annotations

import pytest

from labkit import capture, model, topology
from labkit import where as places
from labkit.capture import Request
from labkit.where import Tap
from labkit.errors import LabkitError
from labkit.model import HostFacts

from ..conftest import REPO


def lab(name: str, taken=frozenset()):
    return model.resolve(topology.load(str(REPO / "examples" / name)), HostFacts(taken_links=frozenset(taken)))


LACP = lab("lacp.yaml")
TAPS = {d.name: tuple(f"vnet{i}{k}" for k in range(len(d.nics))) for i, d in enumerate(LACP.domains)}


def test_each_form_names_its_interfaces():
    cvm = next(d for d in LACP.domains if d.role == "cvm")
    uvm = next(d for d in LACP.domains if d.role == "uvm")
    assert places.locate(LACP, "node1/eth2", TAPS) == Tap("node1/eth2", None, ("eth2",), True)
    assert places.locate(LACP, "node1/br0-up", TAPS) == Tap("node1/br0-up", None, ("eth2", "eth3"), True)
    assert places.locate(LACP, "node1/br0", TAPS) == Tap("node1/br0", "labkit.lacp.node1", ("br0",), False)
    assert places.locate(LACP, "node1/virbr0", TAPS) == Tap("node1/virbr0", "labkit.lacp.node1", ("virbr0",), False)
    assert places.locate(LACP, "cvm/1", TAPS) == Tap("cvm/1", None, (TAPS[cvm.name][1],), False)
    assert places.locate(LACP, uvm.ahv_name, TAPS) == Tap(uvm.ahv_name, None, (TAPS[uvm.name][0],), False)
    tor = next(b for b in LACP.bridges if b.role == "tor")
    port = tor.ports[0].name
    assert places.locate(LACP, f"tor/{port}", TAPS) == Tap(f"tor/{port}", None, (port,), True)


def test_fallback_names_are_found_by_the_topology_s_names():
    shifted = lab("lacp.yaml", taken={"eth2", "eth3", "br0-up"})
    found = places.locate(shifted, "node1/br0-up", {})
    assert found.ifnames[0].startswith("eth2-") and found.ifnames[1].startswith("eth3-")
    assert places.locate(shifted, "node1/eth3", {}).ifnames == (found.ifnames[1],)


@pytest.mark.parametrize("where, message", [
    ("node1/eth9", "node 1 has no interface"),
    ("nothing", "has nothing called 'nothing' to capture on"),
    ("tor/nope", "switch tor of lab lacp has no port 'nope'; its ports:"),
    ("cvm/x", "after VM/ give its NIC's number from 0"),
    ("cvm/7", "has 2 NIC(s), numbered from 0"),
])
def test_mistakes_say_what_there_is(where, message):
    with pytest.raises(LabkitError) as err:
        places.locate(LACP, where, TAPS)
    assert message.replace("node 1", "node node1") in str(err.value) and "\n" not in str(err.value)


def test_a_vm_that_is_not_running_has_nothing_to_capture():
    uvm = next(d for d in LACP.domains if d.role == "uvm")
    with pytest.raises(LabkitError, match=f"VM {uvm.ahv_name} is not running"):
        places.locate(LACP, uvm.ahv_name, {})


def test_tcpdump_s_command_line():
    bond = places.locate(LACP, "node1/br0-up", TAPS)
    request = Request("node1/br0-up", vlan=32, bpf="arp", count=5)
    capture.check(request, bond)
    assert capture.command(request, "eth2", pcap=False) == [
        "tcpdump", "-i", "eth2", "-n", "-e", "-Z", "root", "-l", "-c", "5", "--", "vlan 32 and (arp)"]
    assert capture.command(Request("node1/eth2", out="-"), "eth2", pcap=True) == [
        "tcpdump", "-i", "eth2", "-n", "-e", "-Z", "root", "-U", "-w", "-"]


@pytest.mark.parametrize("request_, message", [
    (Request("cvm", vlan=32), "cvm is an access port: its frames carry no VLAN tag"),
    (Request("node1/eth2", vlan=5000), "--vlan 5000 is not a VLAN id"),
    (Request("node1/eth2", bpf="arp\nor ip"), "--filter is a tcpdump (BPF) expression"),
    (Request("node1/eth2", count=0), "--count 0 is not"),
    (Request("node1/eth2", seconds=-1), "--seconds -1 is not"),
])
def test_values_are_checked_before_tcpdump_sees_them(request_, message):
    with pytest.raises(LabkitError) as err:
        capture.check(request_, places.locate(LACP, request_.where, TAPS))
    assert message in str(err.value)
