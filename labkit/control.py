"""The lab's control plane (pure): its AHV-level objects and the changes acli makes to them.

Networks, VMs and NICs are read from the lab's effective state (its topology, its IPAM ledger,
its records' logical timestamps) as records shaped like Prism's v2 JSON (`networks`, `vms`,
`vm_nics`: shared/reference/ahv-ipam-api.md §3), so a REST API is a thin layer on top. A change
returns a new topology and the objects it touched; the caller (commands.apply_change) applies
it through the same IPAM -> resolve -> plan -> apply path as lab.up, and the state it saves is
what lab.status, a later lab.up, lab.down and lab.export see. Every value a change takes is
checked where the topology's models check it (topology.py, values.py): acli, a file and the API
alike.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from dataclasses import dataclass, field, replace

from . import ipam, ledger, names, nic_identity
from .control_base import ControlError, _address, _build, _interface, _mac, _validated
from .control_hosts import HostControl
from .control_storage import StorageControl
from .ledger import Ledger
from .topology import IpConfig, Network, Nic, Topology, Vm, crosscheck
from .values import echo, shown
from .yamlpos import dotted


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class NicRecord:
    mac: str
    uuid: str
    network: str | None
    network_uuid: str | None
    vlan_id: int | None
    ip: str | None  # the IPAM address (managed network) or the static one the topology gives
    managed: bool
    trunked_networks: tuple[int, ...] = ()
    trunk: bool = False

    @property
    def vlan_mode(self) -> str:
        return "kTrunked" if self.trunk else "kAccess"

    def v2(self) -> dict:
        return {"mac_address": self.mac, "network_uuid": self.network_uuid, "ip_address": self.ip,
                "requested_ip_address": self.ip if self.managed else None, "is_connected": True, "model": "virtio",
                "vlan_mode": self.vlan_mode, "trunked_networks": list(self.trunked_networks)}


@dataclass(frozen=True)
class VmRecord:
    name: str
    uuid: str
    memory_mb: int
    num_vcpus: int
    power_state: str  # "on" / "off", as v2 writes it
    host: str  # the node it runs on
    nics: tuple[NicRecord, ...]
    logical_timestamp: int = 1
    cores_per_vcpu: int = 1
    disks: tuple = ()  # control_storage.DiskRecord
    boot: dict = field(default_factory=dict)  # boot_device, uefi_boot
    affinity: tuple[str, ...] = ()  # the hosts it may run on (none: any)

    def v2(self) -> dict:
        boot = {"uefi_boot": self.boot.get("uefi_boot", False)}
        device = self.boot.get("boot_device")
        if device and "disk_addr" in device:
            boot |= {"boot_device_type": "DISK", "disk_address": {"device_bus": device["disk_addr"]["bus"],
                                                                  "device_index": device["disk_addr"]["index"]}}
        elif device:
            boot |= {"boot_device_type": "NIC", "mac_addr": device["mac_addr"]}
        return {"name": self.name, "uuid": self.uuid, "memory_mb": self.memory_mb, "num_vcpus": self.num_vcpus,
                "num_cores_per_vcpu": self.cores_per_vcpu, "power_state": self.power_state, "host_name": self.host,
                "vm_logical_timestamp": self.logical_timestamp, "vm_nics": [n.v2() for n in self.nics],
                "vm_disk_info": [d.v2() for d in self.disks], "boot": boot,
                "affinity": {"policy": "AFFINITY", "host_uuids": list(self.affinity)} if self.affinity else None}


@dataclass(frozen=True)
class NetworkRecord:
    name: str
    uuid: str
    vlan_id: int
    vswitch_name: str
    ip_config: IpConfig | None
    assigned: frozenset = field(default_factory=frozenset)  # addresses held by NICs
    logical_timestamp: int = 1

    @property
    def managed(self) -> bool:
        return self.ip_config is not None

    def v2(self) -> dict:
        ipc = self.ip_config
        if ipc is None:  # v2's unmanaged form (a real sample)
            ip_config = {"prefix_length": 0, "ipam_enabled": False, "free_ips": -1, "assigned_ips": -1,
                         "num_macs": 0, "dhcp_options": {}, "pool": []}
        else:
            reserved = ipam.reserved(ipc)
            pools = []
            for text in ipc.pool:
                pool_ipc = ipc.model_copy(update={"pool": [text]})
                free, total = ipam.free_count(pool_ipc, set(self.assigned))
                pools.append({"range": text, "num_free_ips": free, "num_total_ips": total})
            assigned = len(self.assigned | reserved)
            ip_config = {"network_address": str(ipc.network.network_address), "prefix_length": ipc.network.prefixlen,
                         "ipam_enabled": True, "default_gateway": str(ipc.gateway),
                         "dhcp_server_address": str(ipam.dhcp_server(ipc)), "pool": pools,
                         "free_ips": ipc.network.num_addresses - assigned, "assigned_ips": assigned,
                         "num_macs": len(self.assigned), "dhcp_options": dhcp_options(ipc)}
        return {"name": self.name, "uuid": self.uuid, "vlan_id": self.vlan_id, "vswitch_name": self.vswitch_name,
                "logical_timestamp": self.logical_timestamp, "ip_config": ip_config}


def dhcp_options(ipc: IpConfig) -> dict:
    """v2's `dhcp_options`: strings, DNS servers comma-separated."""
    out = {}
    if ipc.dns:
        out["domain_name_servers"] = ",".join(str(a) for a in ipc.dns)
    if ipc.domain_name:
        out["domain_name"] = ipc.domain_name
    if ipc.domain_search:
        out["domain_search"] = ",".join(ipc.domain_search)
    if ipc.tftp_server:
        out["tftp_server_name"] = ipc.tftp_server
    if ipc.boot_file:
        out["boot_file_name"] = ipc.boot_file
    return out


@dataclass(frozen=True)
class Change:
    """A new topology and the objects it touched ("vm:NAME", "net:NAME", "nic:VM:MAC"), for the
    task lines and the task's entities; `verb` names the operation (OPERATIONS)."""

    topo: Topology
    touched: tuple[str, ...]
    deleted: tuple[str, ...] = ()
    verb: str = ""
    uuids: tuple[tuple[str, str], ...] = ()  # (VM name, UUID) before and after: a deleted or renamed VM's too

    def vm_uuid(self, name: str) -> str:
        return dict(self.uuids).get(name) or names.uuid_for(self.topo.name, name)

    @property
    def operation(self) -> str:
        return OPERATIONS.get(self.verb, self.verb)


# Task operations, as Prism lists them (Ergon's operation types without their k: kVmCreate is
# VmCreate). Inferred from AHV's acli task lines and Prism's task list; not checked on a cluster.
OPERATIONS = {
    "net.create": "NetworkCreate", "subnet.create": "NetworkCreate", "subnet.update": "NetworkUpdate",
    "net.add_dhcp_pool": "NetworkUpdate", "net.update_dhcp_dns": "NetworkUpdate", "net.delete": "NetworkDelete",
    "vm.create": "VmCreate", "vm.update": "VmUpdate", "vm.delete": "VmDelete", "vm.on": "VmSetPowerState",
    "vm.off": "VmSetPowerState", "vm.nic_create": "NicCreate", "vm.nic_update": "NicUpdate",
    "vm.nic_delete": "NicDelete", "vm.clone": "VmClone", "net.update": "NetworkUpdate", "net.del_dhcp_pool": "NetworkUpdate",
    "net.clear_dhcp_dns": "NetworkUpdate", "image.create": "ImageCreate", "image.update": "ImageUpdate",
    "image.delete": "ImageDelete", "vm.disk_create": "DiskCreate", "vm.disk_update": "DiskUpdate",
    "vm.disk_delete": "DiskDelete", "vm.update_boot_device": "VmUpdate", "vm.migrate": "VmMigrate",
    "host.enter_maintenance_mode": "EnterMaintenanceMode", "host.exit_maintenance_mode": "ExitMaintenanceMode",
    "vm.affinity_set": "VmUpdate", "vm.affinity_unset": "VmUpdate",
}


# --------------------------------------------------------------------------- the control plane


def network_uuid(lab: str, name: str) -> str:
    return names.uuid_for(lab, "network", name)


def nic_uuid(lab: str, mac: str) -> str:
    """A NIC's UUID, from its MAC (its identity: nic_identity.py), whatever its VM is called."""
    return names.uuid_for(lab, "nic", mac)


class Control(StorageControl, HostControl):
    """One lab's objects as they stand; each change method returns a Change and alters nothing."""

    def __init__(self, topo: Topology, bindings: Ledger | None = None, timestamps: dict[str, int] | None = None):
        self.topo = nic_identity.pin(topo)
        self.ledger = ledger.assign(self.topo, bindings or Ledger()).ledger
        self.timestamps = timestamps or {}

    # reading ---------------------------------------------------------------

    def networks(self) -> list[NetworkRecord]:
        return [self._network_record(n) for n in self.topo.networks]

    def network(self, ref: str) -> NetworkRecord:
        """A network by name or UUID (acli takes either)."""
        for net in self.topo.networks:
            if ref in (net.name, network_uuid(self.topo.name, net.name)):
                return self._network_record(net)
        known = ", ".join(n.name for n in self.topo.networks) or "none yet"
        raise ControlError(f"network {shown(ref)} does not exist; networks: {known}")

    def vms(self, pattern: str = "*") -> list[VmRecord]:
        """VMs whose name matches `pattern` (AHV's globs: `web*`, `vm[0-9]`) or whose UUID it is."""
        found = [self._vm_record(vm) for vm in self.topo.vms
                 if fnmatch.fnmatchcase(vm.name, pattern) or pattern == vm.uuid]
        if not found and pattern != "*":
            known = ", ".join(v.name for v in self.topo.vms) or "none yet"
            raise ControlError(f"no VM matches {shown(pattern)}; VMs: {known}")
        return found

    def vm(self, ref: str) -> VmRecord:
        found = self.vms(ref)
        if len(found) != 1:
            raise ControlError(f"{shown(ref)} matches {len(found)} VMs ({', '.join(v.name for v in found)}); name one")
        return found[0]

    def nic(self, vm: str, mac: str) -> NicRecord:
        record = self.vm(vm)
        for nic in record.nics:
            if nic.mac == mac.lower():
                return nic
        raise ControlError(f"VM {record.name} has no NIC with MAC {echo(mac)}; its NICs: "
                           f"{', '.join(n.mac for n in record.nics) or 'none'}")

    def _network_record(self, net: Network) -> NetworkRecord:
        assigned = frozenset(b.address for b in self.ledger.on(net.name))
        return NetworkRecord(net.name, network_uuid(self.topo.name, net.name), net.vlan, net.bridge, net.ip_config,
                             assigned if net.ip_config else frozenset(), self.timestamps.get(f"net:{net.name}", 1))

    def _vm_record(self, vm: Vm) -> VmRecord:
        networks = {n.name: n for n in self.topo.networks}
        nics = []
        for nic in vm.nics:
            net = networks.get(nic.network)
            bound = self.ledger.of(nic.mac)
            address = bound.address if bound else nic.ip.ip if nic.ip else None
            nics.append(NicRecord(nic.mac, nic_uuid(self.topo.name, nic.mac), nic.network,
                                  network_uuid(self.topo.name, nic.network) if net else None, net.vlan if net else None,
                                  str(address) if address else None, bool(net and net.ip_config),
                                  tuple(nic.trunk or ()), nic.trunk is not None))
        return VmRecord(vm.name, vm.uuid, vm.memory, vm.vcpus, vm.power, vm.node, tuple(nics),
                        self.timestamps.get(f"vm:{vm.uuid}", 1), vm.cores_per_vcpu, tuple(self._disk_records(vm)),
                        self._boot(vm), tuple(vm.affinity))

    # networks ----------------------------------------------------------------

    def net_create(self, name: str, vlan: int, ip_config: str | None = None, vswitch_name: str | None = None,
                   dhcp_address: str | None = None) -> Change:
        """acli's net.create: a network, managed with `ip_config=GW/PREFIX` (the gateway's address)
        and its DHCP server on `dhcp_address` (default: the network's last usable address)."""
        managed = None
        if ip_config is not None:
            gateway = _interface(ip_config, "ip_config")
            managed = {"network": str(gateway.network), "gateway": str(gateway.ip)}
            if dhcp_address is not None:
                managed["dhcp_server"] = str(_address(dhcp_address, "dhcp_address"))
        elif dhcp_address is not None:
            raise ControlError("dhcp_address= needs ip_config= (a managed network); add ip_config=GW/PREFIX")
        return self.subnet_create(name, vlan, vswitch_name or "br0", managed, verb="net.create")

    def subnet_create(self, name: str, vlan: int, bridge: str = "br0", managed: dict | None = None,
                      verb: str = "subnet.create") -> Change:
        """A network on `bridge`'s VLAN; managed when `managed` gives IPAM's settings (the keys of
        topology.IpConfig: network, gateway, pool ["START END"], dhcp_server, dns, domain_name,
        domain_search, tftp_server, boot_file). Its VLAN reaches the switch, with a gateway for a
        managed network's subnet where the VLAN has none."""
        if any(n.name == name for n in self.topo.networks):
            raise ControlError(f"network {name} already exists; choose another name or net.delete it first")
        clash = next((n for n in self.topo.networks if n.vlan == vlan and n.bridge == bridge), None)
        if clash:
            raise ControlError(f"network {clash.name} already carries VLAN {vlan} on {bridge}; use it or another VLAN")
        ipc = _build(IpConfig, **managed) if managed is not None else None
        switch = self.topo.switch
        if ipc is not None and vlan not in switch.gateways:  # the lab's router for the new subnet, on the switch
            gateway = ipaddress.IPv4Interface(f"{ipc.gateway}/{ipc.network.prefixlen}")
            switch = switch.model_copy(update={"gateways": {**switch.gateways, vlan: gateway}})
        if vlan not in switch.vlans:  # the switch carries every VLAN a network uses
            switch = switch.model_copy(update={"vlans": sorted({*switch.vlans, vlan})})
        net = _build(Network, name=name, vlan=vlan, bridge=bridge, ip_config=ipc)
        return self._change(verb, {"switch": switch, "networks": [*self.topo.networks, net]}, touched=(f"net:{name}",))

    def subnet_update(self, ref: str, managed: dict | None) -> Change:
        """A network's IPAM settings replaced (the REST API's PUT: the whole subnet, as read and
        changed); its name, VLAN and bridge stay (renaming is not modelled: a NIC names its network)."""
        record = self.network(ref)
        if (managed is None) != (record.ip_config is None):
            raise ControlError(f"network {record.name} is {'managed' if record.ip_config else 'unmanaged'}; a network "
                               f"cannot become {'unmanaged' if record.ip_config else 'managed'}: create another")
        if managed is None:
            return self._change("subnet.update", {}, touched=())
        ipc = _build(IpConfig, **managed)
        nets = [n.model_copy(update={"ip_config": ipc}) if n.name == record.name else n for n in self.topo.networks]
        return self._change("subnet.update", {"networks": nets}, touched=(f"net:{record.name}",))

    def net_add_dhcp_pool(self, ref: str, start: str, end: str) -> Change:
        record = self.network(ref)
        if record.ip_config is None:
            raise ControlError(f"network {record.name} is not managed (no ip_config); a DHCP pool needs a managed network")
        pool = [*record.ip_config.pool, f"{_address(start, 'start')} {_address(end, 'end')}"]
        return self._update_ip_config(record.name, "net.add_dhcp_pool", pool=pool)

    def net_update_dhcp_dns(self, ref: str, servers: str | None = None, domains: str | None = None) -> Change:
        record = self.network(ref)
        if record.ip_config is None:
            raise ControlError(f"network {record.name} is not managed (no ip_config); DHCP options need a managed network")
        update = {}
        if servers is not None:
            update["dns"] = [_address(s, "servers") for s in servers.split(",") if s]
        if domains is not None:
            update["domain_search"] = [d for d in domains.split(",") if d]
        return self._update_ip_config(record.name, "net.update_dhcp_dns", **update)

    def net_update(self, ref: str, vlan: int | None = None) -> Change:
        """A network moved to another VLAN (its VMs' ports are tagged anew; the switch carries it)."""
        record = self.network(ref)
        if vlan is None or vlan == record.vlan_id:
            return self._change("net.update", {}, touched=())
        clash = next((n for n in self.topo.networks if n.vlan == vlan and n.bridge == record.vswitch_name), None)
        if clash:
            raise ControlError(f"network {clash.name} already carries VLAN {vlan} on {record.vswitch_name}; use another VLAN")
        nets = [n.model_copy(update={"vlan": vlan}) if n.name == record.name else n for n in self.topo.networks]
        return self._change("net.update", {"networks": nets, **self._switch_with({vlan})}, touched=(f"net:{record.name}",))

    def net_del_dhcp_pool(self, ref: str, start: str, end: str) -> Change:
        record = self.network(ref)
        if record.ip_config is None:
            raise ControlError(f"network {record.name} is not managed (no ip_config); it has no DHCP pool")
        text = f"{_address(start, 'start')} {_address(end, 'end')}"
        if text not in record.ip_config.pool:
            raise ControlError(f"network {record.name} has no pool {start}-{end}; its pools: "
                               f"{', '.join(p.replace(' ', '-') for p in record.ip_config.pool) or 'none'}")
        return self._update_ip_config(record.name, "net.del_dhcp_pool",
                                      pool=[p for p in record.ip_config.pool if p != text])

    def net_clear_dhcp_dns(self, ref: str) -> Change:
        record = self.network(ref)
        if record.ip_config is None:
            raise ControlError(f"network {record.name} is not managed (no ip_config); it has no DHCP options")
        return self._update_ip_config(record.name, "net.clear_dhcp_dns", dns=[], domain_search=[], domain_name=None)

    def virtual_switches(self) -> list[dict]:
        """AHV's virtual switches: a bridge of the lab's nodes (br0 is vs0), its bond and uplinks per node."""
        out = []
        for index, bridge in enumerate(sorted({b for n in self.topo.nodes for b in n.bridges})):
            hosts = []
            for node in self.topo.nodes:
                spec = node.bridges.get(bridge)
                if spec is None:
                    continue
                bond = spec.bond
                hosts.append({"host": node.name, "bridge": bridge, "mtu": spec.mtu,
                              "bond": bond.name if bond else "", "bond_mode": bond.mode if bond else "",
                              "lacp": bond.lacp if bond else "off", "uplinks": list(bond.interfaces) if bond else []})
            out.append({"name": f"vs{index}", "bridge": bridge, "uuid": names.uuid_for(self.topo.name, "vswitch", bridge),
                        "hosts": hosts})
        return out

    def net_delete(self, ref: str) -> Change:
        record = self.network(ref)
        users = [f"{vm.name} ({nic.mac})" for vm in self.topo.vms for nic in vm.nics if nic.network == record.name]
        if users:
            raise ControlError(f"network {record.name} is in use by the NICs of {', '.join(users)}; "
                               f"delete them (vm.nic_delete VM MAC) first")
        nets = [n for n in self.topo.networks if n.name != record.name]
        update: dict = {"networks": nets}
        ipc, switch = record.ip_config, self.topo.switch
        if ipc is not None and switch.gateways.get(record.vlan_id) == ipaddress.IPv4Interface(
                f"{ipc.gateway}/{ipc.network.prefixlen}") and not self._vlan_used(record.vlan_id, nets):
            # the gateway net.create put on the switch for this network goes with it
            gateways = {vlan: gw for vlan, gw in switch.gateways.items() if vlan != record.vlan_id}
            update["switch"] = switch.model_copy(update={"gateways": gateways})
        return self._change("net.delete", update, touched=(), deleted=(f"net:{record.name}",))

    def _vlan_used(self, vlan: int, networks: list[Network]) -> bool:
        """Whether anything but the network being deleted stands on `vlan` (a host, a CVM, a network,
        a trunk)."""
        return (any(n.vlan == vlan for n in networks) or any(vlan in (n.host_vlan, n.cvm.vlan) for n in self.topo.nodes)
                or any(vlan in (nic.trunk or ()) or vlan in nic.ips for vm in self.topo.vms for nic in vm.nics))

    def _update_ip_config(self, name: str, verb: str, **update) -> Change:
        nets = [n.model_copy(update={"ip_config": n.ip_config.model_copy(update=update)}) if n.name == name else n
                for n in self.topo.networks]
        return self._change(verb, {"networks": nets}, touched=(f"net:{name}",))

    # VMs -------------------------------------------------------------------

    def vm_create(self, name: str, memory: int | None = None, num_vcpus: int | None = None,
                  nics: list[dict] = (), cores_per_vcpu: int | None = None, disks: list = (), uefi: bool = False,
                  boot: str | None = None) -> Change:
        """A new VM, powered off (as AHV creates them), on the node with the fewest VMs; with `nics`
        (each: network, and optionally ip, mac, trunked_networks), its NICs too (the REST API's)."""
        if any(vm.name == name for vm in self.topo.vms):
            raise ControlError(f"VM {name} already exists; choose another name or vm.delete it first")
        schedulable = [h for h in self.hosts() if h.schedulable] or self.hosts()
        node = min(schedulable, key=lambda h: h.vms).name  # created powered off: vm.on places it again if need be
        spec = {"name": name, "node": node, "power": "off"}
        spec |= {k: v for k, v in (("memory", memory), ("vcpus", num_vcpus), ("cores_per_vcpu", cores_per_vcpu))
                 if v is not None}
        made: list[Nic] = []
        for nic in nics:
            made.append(self._nic(name, nic["network"], nic.get("ip"), nic.get("trunked_networks"), nic.get("mac"),
                                  taken=[n.mac for n in made]))
        spec["nics"] = made
        spec |= {"disks": list(disks), "uefi": uefi, "boot": boot}
        vlans = {v for nic in made for v in nic.trunk or ()}
        return self._change("vm.create", {"vms": [*self.topo.vms, _build(Vm, **spec)], **self._switch_with(vlans)},
                            touched=(f"vm:{name}",))

    def vm_update(self, ref: str, memory: int | None = None, num_vcpus: int | None = None,
                  cores_per_vcpu: int | None = None, name: str | None = None, uefi: bool | None = None) -> Change:
        """A VM's size, CPU topology, firmware or name (a renamed VM keeps its UUID, NICs and addresses)."""
        record = self.vm(ref)
        if name is not None and name != record.name and any(vm.name == name for vm in self.topo.vms):
            raise ControlError(f"VM {name} already exists; choose another name")
        update = {k: v for k, v in (("memory", memory), ("vcpus", num_vcpus), ("cores_per_vcpu", cores_per_vcpu),
                                    ("name", name), ("uefi", uefi)) if v is not None}
        vms = [_build(Vm, **{**vm.model_dump(), **update}) if vm.name == record.name else vm for vm in self.topo.vms]
        return self._change("vm.update", {"vms": vms}, touched=(f"vm:{name or record.name}",))

    def vm_create_many(self, vm_names: list[str], memory: int | None = None, num_vcpus: int | None = None,
                       cores_per_vcpu: int | None = None, uefi: bool = False) -> Change:
        """acli's bulk vm.create (web[1..5]): one change, each VM on the node with the fewest VMs then."""
        ctl, changes = self, []
        for name in vm_names:
            change = ctl.vm_create(name, memory, num_vcpus, cores_per_vcpu=cores_per_vcpu, uefi=uefi)
            changes.append(change)
            ctl = Control(change.topo, self.ledger, self.timestamps)
        return self._merged("vm.create", changes)

    def vm_clone(self, vm_names: list[str], source: str) -> Change:
        """vm.clone NAME[...] clone_from_vm=SRC: VMs like SRC (memory, CPUs, disks, NICs on the same
        networks with MACs of their own; a managed NIC takes a pool address), powered off."""
        src = next(vm for vm in self.topo.vms if vm.name == self.vm(source).name)
        # its disks: a clone of an image is cloned from that image again, any other disk copied
        # (AHV's clones are copy-on-write snapshots; a lab's are qcow2 copies), a CD-ROM holds the same ISO
        disks = [d.model_copy(update={"uuid": None, "clone_of": None if d.cdrom or d.image else d.uuid,
                                      "size": d.size if d.image or d.cdrom else self._vmdisk(d.uuid).size})
                 for d in src.disks]
        ctl, changes = self, []
        for name in vm_names:
            nics = [{"network": nic.network, "trunked_networks": nic.trunk} for nic in src.nics if nic.network]
            change = ctl.vm_create(name, src.memory, src.vcpus, nics, src.cores_per_vcpu, disks, src.uefi,
                                   src.boot if src.boot and ":" not in src.boot else None)
            changes.append(change)
            ctl = Control(change.topo, self.ledger, self.timestamps)
        return self._merged("vm.clone", changes)

    def _merged(self, verb: str, changes: list[Change]) -> Change:
        last = changes[-1]
        return Change(last.topo, tuple(k for c in changes for k in c.touched), (), verb,
                      tuple(sorted({pair for c in changes for pair in c.uuids})))

    def vm_delete(self, pattern: str) -> Change:
        gone = {r.name for r in self.vms(pattern)}
        return self._change("vm.delete", {"vms": [vm for vm in self.topo.vms if vm.name not in gone]},
                            touched=(), deleted=tuple(f"vm:{n}" for n in sorted(gone)))

    def vm_power(self, pattern: str, on: bool) -> Change:
        matched = {r.name for r in self.vms(pattern)}
        moves = self.power_on_placement(matched) if on else {}  # never onto a host in maintenance mode
        vms = [vm.model_copy(update={"power": "on" if on else "off", "node": moves.get(vm.name, vm.node)})
               if vm.name in matched else vm for vm in self.topo.vms]
        return self._change("vm.on" if on else "vm.off", {"vms": vms},
                            touched=tuple(f"vm:{n}" for n in sorted(matched)))

    # NICs ------------------------------------------------------------------

    def nic_create(self, vm: str, network: str, ip: str | None = None, request_ip: bool = False,
                   trunked_networks: list[int] | None = None, mac: str | None = None) -> Change:
        """A NIC; on a managed network IPAM binds it an address now: the requested one, else the
        pool's lowest free one (the ledger decides it when the change is made)."""
        record = self.vm(vm)
        if request_ip and not self.network(network).managed:
            raise ControlError("Cannot assign IP address on an unmanaged network")  # AHV's words
        nic = self._nic(record.name, network, ip, trunked_networks, mac)
        change = self._edit_nics(record.name, "vm.nic_create", lambda nics: [*nics, nic],
                                 switch_vlans=trunked_networks or ())
        return replace(change, touched=(*change.touched, f"nic:{record.name}:{nic.mac}"))

    def _nic(self, vm_name: str, network: str, ip: str | None, trunked_networks: list[int] | None, mac: str | None,
             taken: list[str] = ()) -> Nic:
        net = self.network(network)
        if ip is not None and not net.managed:
            raise ControlError("Cannot assign IP address on an unmanaged network")  # AHV's words
        mac = _mac(mac) if mac else self._new_mac(vm_name, taken)
        if mac in taken or any(n.mac == mac for v in self.topo.vms for n in v.nics):
            raise ControlError(f"MAC address {mac} is already used by a NIC of this lab; give another mac= or leave it out")
        return _build(Nic, network=net.name, mac=mac, trunk=trunked_networks, ip=self._request(net, ip))

    def nic_update(self, vm: str, mac: str, network: str | None = None, ip: str | None = None,
                   trunked_networks: list[int] | None = None, access: bool = False) -> Change:
        """Move a NIC to another network (it takes an address there if that one is managed), change its
        address, make it trunked (`trunked_networks`) or access again (`access`)."""
        current = self.nic(vm, mac)
        vm_name = self.vm(vm).name
        net = self.network(network) if network else self.network(current.network) if current.network else None
        if ip is not None and (net is None or not net.managed):
            raise ControlError("Cannot assign IP address on an unmanaged network")
        trunk = None if access else (trunked_networks if trunked_networks is not None else
                                     (list(current.trunked_networks) if current.trunk else None))
        update: dict = {"network": net.name if net else None, "trunk": trunk}
        if ip is not None:
            update["ip"] = self._request(net, ip, mine=current.mac)
        elif net is not None and net.name != current.network:
            update["ip"] = None  # a requested or static address belonged to the old network
        return self._edit_nics(vm_name, "vm.nic_update",
                               lambda nics: [n.model_copy(update=update) if n.mac == current.mac else n for n in nics],
                               switch_vlans=trunk or ())

    def nic_delete(self, vm: str, mac: str) -> Change:
        current = self.nic(vm, mac)
        return self._edit_nics(self.vm(vm).name, "vm.nic_delete",
                               lambda nics: [n for n in nics if n.mac != current.mac])

    def _edit_nics(self, vm_name: str, verb: str, edit, switch_vlans=()) -> Change:
        vms = [vm.model_copy(update={"nics": edit(list(vm.nics))}) if vm.name == vm_name else vm for vm in self.topo.vms]
        return self._change(verb, {"vms": vms, **self._switch_with(switch_vlans)}, touched=(f"vm:{vm_name}",))

    def _switch_with(self, vlans) -> dict:
        """The update that makes the switch carry `vlans` too (trunked VLANs reach it, as networks' do)."""
        missing = set(vlans) - set(self.topo.switch.vlans)
        if not missing:
            return {}
        return {"switch": self.topo.switch.model_copy(update={"vlans": sorted({*self.topo.switch.vlans, *missing})})}

    def _request(self, net: NetworkRecord, requested: str | None, mine: str | None = None) -> ipaddress.IPv4Interface | None:
        """A requested address (acli's ip=), checked as AHV checks it, with the network's prefix;
        None when none is requested (IPAM then chooses)."""
        if requested is None:
            return None
        address = _address(requested, "ip")
        held = ledger.lab_addresses(self.topo) - ipam.reserved(net.ip_config)
        taken = {b.address for b in self.ledger.bindings if b.mac != mine} | held
        if mine is not None and (own := self.ledger.of(mine)) is not None:
            taken.discard(own.address)
        ipam.check_request(net.name, net.ip_config, address, taken)
        return ipaddress.IPv4Interface(f"{address}/{net.ip_config.network.prefixlen}")

    def _new_mac(self, vm_name: str, taken=()) -> str:
        used = {nic.mac for vm in self.topo.vms for nic in vm.nics} | set(taken)
        bump = 0
        while (mac := names.mac(names.UVM_OUI, self.topo.name, vm_name, "acli", bump=bump)) in used:
            bump += 1
        return mac

    # every change ------------------------------------------------------------

    def _change(self, verb: str, update: dict, touched: tuple[str, ...], deleted: tuple[str, ...] = ()) -> Change:
        topo = _validated(verb, self.topo.model_copy(update=update))
        problems = crosscheck(topo, pools=False)
        if problems:
            path, message = problems[0]
            raise ControlError(f"{verb} would make the lab invalid: {dotted(path)}: {message}")
        ledger.assign(topo, self.ledger)  # IPAM can bind every NIC (raises its one sentence if not)
        topo = nic_identity.pin(topo, self.topo)
        uuids = {vm.name: vm.uuid for vm in self.topo.vms} | {vm.name: vm.uuid for vm in topo.vms}
        return Change(topo, touched, deleted, verb, tuple(sorted(uuids.items())))


def after(before: Control | None, topo: Topology, bindings: Ledger) -> Control:
    """The control plane once `topo` (MACs pinned, its bindings decided) replaced `before`'s: its
    records' logical timestamps advanced (advance)."""
    ctl = Control(topo, bindings, before.timestamps if before else {})
    ctl.timestamps = advance(before, ctl)
    return ctl


def advance(before: Control | None, after: Control) -> dict[str, int]:
    """The logical timestamps after a change (a record's ETag): each VM (by UUID) or network whose
    spec or bindings changed, by any road, counts one more; a new one starts at 1; a gone one is dropped."""
    def specs(ctl: Control) -> dict[str, object]:
        out: dict[str, object] = {f"net:{n.name}": n for n in ctl.topo.networks}
        out |= {f"image:{im.uuid}": im for im in ctl.topo.images}
        for vm in ctl.topo.vms:
            out[f"vm:{vm.uuid}"] = (vm, tuple(ctl.ledger.of(nic.mac) for nic in vm.nics))  # by UUID: a rename counts
        return out

    old, new = specs(before) if before else {}, specs(after)
    stamps = {key: value for key, value in after.timestamps.items() if key in new}
    for key, spec in new.items():
        if old.get(key) != spec:
            stamps[key] = stamps.get(key, 0) + 1
    return stamps
