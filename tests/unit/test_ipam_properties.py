"""The IPAM ledger under random sequences of changes (hypothesis): networks, VMs and NICs created,
deleted and updated through the control plane as acli makes them, subnets and pools edited and
the lab brought up again from a file without MACs, as a user's own file would.

After every change that is accepted: no address is held twice; no NIC's address moved unless
its network, subnet or pool changed under it; every binding is inside its pool or requested;
the state the lab would save (topology and ledger) reads back whole and valid. A refused change
changes nothing. CI runs a few hundred sequences; LABKIT_HYPOTHESIS_EXAMPLES raises it locally.
"""

from __future__ import annotations

import ipaddress
import os

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from labkit import control, ipam, ledger, nic_identity, state, topology
from labkit.control import Control
from labkit.errors import LabkitError
from labkit.topology import crosscheck

from ..conftest import REPO

EXAMPLES = int(os.environ.get("LABKIT_HYPOTHESIS_EXAMPLES", "300"))
TRAINING = topology.load(str(REPO / "tests" / "topologies" / "training.yaml"))
# A lab with a managed network and VMs already, so that most random changes are accepted.
BASE = TRAINING.model_copy(update={
    "switch": TRAINING.switch.model_copy(update={"vlans": [0, 50], "gateways": {
        **TRAINING.switch.gateways, 50: ipaddress.IPv4Interface("10.50.0.1/28")}}),
    "networks": [*TRAINING.networks, topology.Network(name="n1", vlan=50, ip_config=topology.IpConfig(
        network="10.50.0.0/28", gateway="10.50.0.1", pool=["10.50.0.2 10.50.0.9"]))],
    "vms": [topology.Vm(name=name, node="node1", power="off") for name in ("a", "b", "c")]})
SUBNETS = ["10.50.0.0/28", "10.50.0.0/27", "10.51.0.0/28"]
VMS = ["a", "b", "c", "d"]

STEPS = {
    "vm.nic_create": st.tuples(st.just("vm.nic_create"), st.sampled_from(VMS), st.sampled_from(["n1", "n1", "n2", "vlan0"]),
                               st.one_of(st.none(), st.sampled_from([2, 3, 10, 13]))),
    "vm.nic_delete": st.tuples(st.just("vm.nic_delete"), st.sampled_from(VMS), st.integers(0, 2)),
    "vm.nic_update": st.tuples(st.just("vm.nic_update"), st.sampled_from(VMS), st.integers(0, 2),
                               st.sampled_from(["n1", "n2", "vlan0"]), st.one_of(st.none(), st.sampled_from([2, 3, 10, 13]))),
    "net.create": st.tuples(st.just("net.create"), st.sampled_from(["n1", "n2"]), st.sampled_from([50, 51]),
                            st.sampled_from(SUBNETS)),
    "net.add_dhcp_pool": st.tuples(st.just("net.add_dhcp_pool"), st.sampled_from(["n1", "n2"]), st.integers(2, 12),
                                   st.integers(0, 3)),
    "net.delete": st.tuples(st.just("net.delete"), st.sampled_from(["n1", "n2"])),
    "vm.create": st.tuples(st.just("vm.create"), st.sampled_from(VMS)),
    "vm.delete": st.tuples(st.just("vm.delete"), st.sampled_from(VMS)),
    "edit.subnet": st.tuples(st.just("edit.subnet"), st.sampled_from(["n1", "n2"]), st.sampled_from(SUBNETS)),
    "edit.drop_pool": st.tuples(st.just("edit.drop_pool"), st.sampled_from(["n1", "n2"])),
    "file.without_macs": st.tuples(st.just("file.without_macs")),
}
# NICs change most often (as in a training session); the rest now and then.
WEIGHTS = {"vm.nic_create": 6, "vm.nic_delete": 2, "vm.nic_update": 2}
op = st.sampled_from([kind for kind in STEPS for _ in range(WEIGHTS.get(kind, 1))]).flatmap(STEPS.__getitem__)


def network_of(ctl: Control, name: str):
    return next((n for n in ctl.topo.networks if n.name == name), None)


def host(subnet: str, offset: int) -> str:
    return str(ipaddress.IPv4Network(subnet).network_address + offset)


def change(ctl: Control, step: tuple) -> topology.Topology:
    """The topology `step` asks for (raises LabkitError where the control plane refuses it)."""
    kind, *args = step
    if kind == "net.create":
        name, vlan, subnet = args
        return ctl.net_create(name, vlan, f"{host(subnet, 1)}/{ipaddress.IPv4Network(subnet).prefixlen}").topo
    if kind == "net.add_dhcp_pool":
        name, start, length = args
        net = network_of(ctl, name)
        subnet = str(net.ip_config.network) if net and net.ip_config else SUBNETS[0]
        return ctl.net_add_dhcp_pool(name, host(subnet, start), host(subnet, start + length)).topo
    if kind == "net.delete":
        return ctl.net_delete(args[0]).topo
    if kind == "vm.create":
        return ctl.vm_create(args[0]).topo
    if kind == "vm.delete":
        return ctl.vm_delete(args[0]).topo
    if kind == "vm.nic_create":
        vm, net_name, offset = args
        net = network_of(ctl, net_name)
        ip = host(str(net.ip_config.network), offset) if offset is not None and net and net.ip_config else None
        return ctl.nic_create(vm, net_name, ip=ip).topo
    if kind in ("vm.nic_delete", "vm.nic_update"):
        vm, index, *rest = args
        nics = ctl.vm(vm).nics
        if index >= len(nics):
            raise LabkitError("no such NIC")
        if kind == "vm.nic_delete":
            return ctl.nic_delete(vm, nics[index].mac).topo
        net_name, offset = rest
        net = network_of(ctl, net_name)
        ip = host(str(net.ip_config.network), offset) if offset is not None and net and net.ip_config else None
        return ctl.nic_update(vm, nics[index].mac, network=net_name, ip=ip).topo
    if kind == "edit.subnet":  # a file's edit: the network's subnet moves, its pool with it, requests dropped
        name, subnet = args
        net = network_of(ctl, name)
        if net is None or net.ip_config is None:
            raise LabkitError("not managed")
        new = ipaddress.IPv4Network(subnet)
        ipc = net.ip_config.model_copy(update={"network": new, "gateway": new.network_address + 1,
                                               "pool": [f"{new.network_address + 2} {new.network_address + 9}"]})
        nets = [n.model_copy(update={"ip_config": ipc}) if n.name == name else n for n in ctl.topo.networks]
        vms = [vm.model_copy(update={"nics": [nic.model_copy(update={"ip": None}) if nic.network == name else nic
                                              for nic in vm.nics]}) for vm in ctl.topo.vms]
        gateways = {**ctl.topo.switch.gateways, net.vlan: ipaddress.IPv4Interface(f"{new.network_address + 1}/{new.prefixlen}")}
        return ctl.topo.model_copy(update={"networks": nets, "vms": vms,
                                           "switch": ctl.topo.switch.model_copy(update={"gateways": gateways})})
    if kind == "edit.drop_pool":
        net = network_of(ctl, args[0])
        if net is None or net.ip_config is None or not net.ip_config.pool:
            raise LabkitError("no pool")
        ipc = net.ip_config.model_copy(update={"pool": net.ip_config.pool[1:]})
        return ctl.topo.model_copy(update={"networks": [n.model_copy(update={"ip_config": ipc}) if n.name == args[0] else n
                                                        for n in ctl.topo.networks]})
    if kind == "file.without_macs":  # lab.up --topology F, F the lab as written by hand: no MACs
        return ctl.topo.model_copy(update={"vms": [vm.model_copy(update={"nics": [nic.model_copy(update={"mac": None})
                                                                                   for nic in vm.nics]}) for vm in ctl.topo.vms]})
    raise AssertionError(kind)


def commit(before: Control, topo: topology.Topology) -> Control:
    """What the pipeline does with a new topology: pin identities, decide bindings, advance stamps."""
    if crosscheck(topo):
        raise LabkitError("invalid")
    pinned = nic_identity.pin(topo, before.topo)
    return control.after(before, pinned, ledger.assign(pinned, before.ledger).ledger)


def check(before: Control, after: Control) -> None:
    bindings = after.ledger.bindings
    addresses = [b.address for b in bindings]
    assert len(addresses) == len(set(addresses)), "an address is bound twice"
    held = ledger.lab_addresses(after.topo)
    requested = {b.address for b in bindings if b.requested}
    assert not ({b.address for b in bindings if not b.requested} & (held - requested)), "a held address was handed out"
    nets = {n.name: n.ip_config for n in after.topo.networks if n.ip_config}
    for b in bindings:
        assert b.requested or ipam.in_pool(nets[b.network], b.address), f"{b} is outside its pool"
        assert b.address in nets[b.network].network
    old_nets = {n.name: n.ip_config for n in before.topo.networks if n.ip_config}
    for b in bindings:
        old = before.ledger.of(b.mac)
        if old is None or old.network != b.network or b.requested or old.requested:
            continue
        ipc, old_ipc = nets[b.network], old_nets.get(b.network)
        if old_ipc is not None and old_ipc.network == ipc.network and ipam.in_pool(ipc, old.address):
            assert b.address == old.address, f"{b.vm}'s NIC {b.mac} moved from {old.address} to {b.address}"
    # the saved state reads back whole and valid
    text = state.topology_yaml(after.topo.name, after.topo)
    again = topology.parse(text, "effective.yaml")
    assert again == after.topo and crosscheck(again) == []
    assert ledger.Ledger.from_json(after.ledger.to_json()) == after.ledger
    assert crosscheck(ledger.assign(after.topo, after.ledger).topo) == []


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op, min_size=1, max_size=14))
def test_the_ledger_holds_under_any_sequence_of_changes(steps):
    ctl = control.after(None, nic_identity.pin(BASE), ledger.assign(BASE).ledger)
    accepted = 0
    for step in steps:
        try:
            after = commit(ctl, change(ctl, step))
        except LabkitError:
            continue  # refused: nothing changed (ctl is kept)
        check(ctl, after)
        ctl, accepted = after, accepted + 1
    event(f"{accepted * 10 // len(steps) * 10}% of the changes accepted")
