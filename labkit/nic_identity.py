"""Which VM and NIC is which, across changes (pure): every VM gets a UUID once and every user VM
NIC a MAC once, and keeps it.

The MAC is a NIC's identity: the IPAM ledger binds addresses to it, the guest sees it, the
control plane's NIC UUID derives from it. A NIC that names its MAC keeps it. One that does not
(a topology file written by hand) takes the MAC of the NIC it stands for in the lab's previous
topology: the same VM's first NIC not yet matched on the same network with the same trunk,
never the NIC at the same position (deleting a VM's first NIC must not renumber the others).
A NIC with no match gets a MAC derived from the lab, VM and position, as resolve always did.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import names

if TYPE_CHECKING:
    from .topology import Nic, Topology


def _pin_uuids(topo: Topology, previous: Topology | None) -> Topology:
    """A VM is known by its UUID once it has one: AHV keeps a VM's UUID when it is renamed."""
    if all(vm.uuid for vm in topo.vms):
        return topo
    before = {vm.name: vm.uuid for vm in (previous.vms if previous else []) if vm.uuid}
    used = {vm.uuid for vm in topo.vms if vm.uuid}
    vms = []
    for vm in topo.vms:
        if not vm.uuid:
            uuid = before.get(vm.name) if before.get(vm.name) not in used else None
            uuid = uuid or names.uuid_for(topo.name, vm.name)
            used.add(uuid)
            vm = vm.model_copy(update={"uuid": uuid})
        vms.append(vm)
    return topo.model_copy(update={"vms": vms})


def _pin_storage(topo: Topology, previous: Topology | None) -> Topology:
    """Every disk gets an index on its bus and a vmdisk UUID once (the previous topology's disk at
    the same address of the same VM keeps its own), every image its UUIDs: volumes are named by them."""
    from .topology import indexed

    if all(im.uuid and im.vmdisk_uuid for im in topo.images) and all(d.uuid and d.index is not None
                                                                      for vm in topo.vms for d in vm.disks):
        return topo
    before = {(vm.uuid, d.address): d.uuid for vm in (previous.vms if previous else []) for d in vm.disks if d.uuid}
    images = [im if im.uuid and im.vmdisk_uuid else im.model_copy(update={
        "uuid": im.uuid or names.uuid_for(topo.name, "image", im.name, im.source),
        "vmdisk_uuid": im.vmdisk_uuid or names.uuid_for(topo.name, "image-vmdisk", im.name, im.source)})
        for im in topo.images]
    vms = []
    for vm in topo.vms:
        disks = [d if d.uuid else d.model_copy(update={
            "uuid": before.get((vm.uuid, d.address)) or names.uuid_for(topo.name, "vmdisk", vm.uuid, d.address)})
            for d in indexed(vm.disks)]
        vms.append(vm.model_copy(update={"disks": disks}) if disks != vm.disks else vm)
    return topo.model_copy(update={"images": images, "vms": vms})


def _same_wire(nic: Nic) -> tuple:
    return nic.network, tuple(sorted(nic.trunk)) if nic.trunk is not None else None


def pin(topo: Topology, previous: Topology | None = None) -> Topology:
    """`topo` with a UUID on every VM (its own, the previous topology's VM of that name's, or one
    derived from lab and name), an index and UUID on every disk, UUIDs on every image, and a MAC
    on every user VM NIC (unchanged where all have them)."""
    topo = _pin_storage(_pin_uuids(topo, previous), previous)
    if all(nic.mac for vm in topo.vms for nic in vm.nics):
        return topo
    used = {nic.mac for vm in topo.vms for nic in vm.nics if nic.mac}
    before = {vm.name: [nic for nic in vm.nics if nic.mac and nic.mac not in used] for vm in (previous.vms if previous else [])}
    macs: dict[tuple[str, int], str] = {}
    for vm in topo.vms:
        candidates = list(before.get(vm.name, []))
        for index, nic in enumerate(vm.nics):
            if nic.mac:
                continue
            match = next((c for c in candidates if _same_wire(c) == _same_wire(nic) and c.mac not in used), None)
            if match is not None:
                candidates.remove(match)
                macs[(vm.name, index)] = match.mac
                used.add(match.mac)
    for vm in topo.vms:  # the rest, derived in the lab's order (resolve's MACs for a new lab)
        for index, nic in enumerate(vm.nics):
            if not nic.mac and (vm.name, index) not in macs:
                bump = 0
                while (mac := names.mac(names.UVM_OUI, topo.name, vm.name, str(index), bump=bump)) in used:
                    bump += 1
                macs[(vm.name, index)] = mac
                used.add(mac)
    vms = [vm.model_copy(update={"nics": [nic if nic.mac else nic.model_copy(update={"mac": macs[(vm.name, i)]})
                                          for i, nic in enumerate(vm.nics)]}) for vm in topo.vms]
    return topo.model_copy(update={"vms": vms})
