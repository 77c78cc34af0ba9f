"""acli's hosts: host.list (AHV's nine columns), host.get, host.list_vms, maintenance mode, and
the VM commands that place VMs on hosts: vm.migrate, vm.affinity_set/unset/get (no I/O).

Syntax from public Nutanix material: `host.enter_maintenance_mode HOST wait=true`,
`host.exit_maintenance_mode HOST`, `vm.migrate VM host=HOST live=true`, `vm.affinity_set VM
host_list=H1,H2`. host.get's field names follow AHV's v2 host (no acli capture is known).
"""

from __future__ import annotations

from .acli_base import AcliError, Command, Output, _bool, proto, table
from .control import Change, Control
from .control_hosts import HostRecord


def _host_list(ctl: Control, _args, _kw) -> Output:
    # AHV's nine columns in AHV's order: public scripts read a row's split()[3] as the node state,
    # split()[6] as Schedulable and its last field as the CVM IP. Each cell is one word.
    hosts = ctl.hosts()
    return Output(table(["Hypervisor address", "Hypervisor DNS Name", "Host UUID", "Node state", "Connected",
                         "Node type", "Schedulable", "Hypervisor Name", "CVM IP"],
                        [[h.ip, h.ip, h.uuid, h.node_state, "True", "Hyperconverged", str(h.schedulable), "AHV", h.cvm_ip]
                         for h in hosts]), [host_data(h) for h in hosts])


def host_data(h: HostRecord) -> dict:
    return {"name": h.name, "uuid": h.uuid, "hypervisor_address": h.ip, "service_vmexternal_ip": h.cvm_ip,
            "num_vms": h.vms, "node_state": h.node_state, "schedulable": h.schedulable,
            "memory_capacity_in_bytes": h.memory_mib << 20, "memory_used_in_bytes": h.used_mib << 20}


def _host_get(ctl: Control, args, _kw) -> Output:
    h = ctl.host(args[0])
    fields = {"hypervisor_address": h.ip, "hypervisor_name": h.name, "uuid": h.uuid, "node_state": f"k{h.node_state}",
              "schedulable": h.schedulable, "service_vmexternal_ip": h.cvm_ip, "num_vms": h.vms,
              "hypervisor_type": "kKvm", "memory_capacity_mb": h.memory_mib, "memory_used_mb": h.used_mib}
    return Output(proto(h.name, fields), host_data(h))


def _host_list_vms(ctl: Control, args, _kw) -> Output:
    h = ctl.host(args[0])
    vms = [v for v in ctl.vms() if v.host == h.name]
    return Output(table(["VM name", "VM UUID"], [[v.name, v.uuid] for v in vms]), [v.v2() for v in vms])


def _migrate(ctl: Control, args, kw) -> Change:
    if not _bool(kw, "live") and "live" in kw:
        raise AcliError("live=false is not modelled in this lab: a running VM migrates live; leave live= out")
    return ctl.vm_migrate(args[0], kw.get("host"))


def _waited(kw) -> None:
    """wait=true is what labkit always does (the command returns once the host is there)."""
    if "wait" in kw and not _bool(kw, "wait"):
        raise AcliError("wait=false is not modelled in this lab: the command returns when it is done; leave wait= out")


def _enter_maintenance(ctl: Control, args, kw) -> Change:
    _waited(kw)
    return ctl.enter_maintenance(args[0])


def _exit_maintenance(ctl: Control, args, kw) -> Change:
    _waited(kw)
    return ctl.exit_maintenance(args[0])


def _affinity_set(ctl: Control, args, kw) -> Change:
    return ctl.affinity_set(args[0], [h for h in kw["host_list"].split(",") if h])


def _affinity_get(ctl: Control, args, _kw) -> Output:
    vm = ctl.vm(args[0])
    hosts = {h.name: h.uuid for h in ctl.hosts()}
    fields = {"policy": "kAffinity" if vm.affinity else "kNone", "host_list": [hosts[h] for h in vm.affinity]}
    return Output(proto(vm.name, fields), {"host_uuids": [hosts[h] for h in vm.affinity]})


def _maintenance_check(ctl, args, kw) -> Output:
    verdict = ctl.check_maintenance(args[0])
    return Output([f'"{verdict}"'], {"verdict": verdict})


COMMANDS = (
    Command("host.list", (), (), (), _host_list, "list the lab's nodes"),
    Command("host.get", ("host",), (), (), _host_get, "show a node"),
    Command("host.list_vms", ("host",), (), (), _host_list_vms, "list the VMs on a node"),
    Command("host.enter_maintenance_mode", ("host",), ("wait",), (), _enter_maintenance,
            "migrate every VM off a node (live), then take no VM there", unmodelled=("mode", "non_migratable_vm_action")),
    Command("host.enter_maintenance_mode_check", ("host",), (), (), _maintenance_check,
            "say whether a node can enter maintenance mode (every running VM has somewhere to go)"),
    Command("host.exit_maintenance_mode", ("host",), ("wait",), (), _exit_maintenance,
            "let a node take VMs again; the VMs maintenance moved off it come back"),
    Command("vm.migrate", ("vm",), ("host", "live"), (), _migrate,
            "move a running VM to another node, live (host=: which; else the one with most free memory)",
            unmodelled=("bandwidth_mbps",)),
    Command("vm.affinity_set", ("vm",), ("host_list",), ("host_list",), _affinity_set,
            "let a VM run only on the listed nodes (a running VM elsewhere migrates to one)"),
    Command("vm.affinity_unset", ("vm",), (), (), lambda ctl, a, kw: ctl.affinity_unset(a[0]),
            "let a VM run on any node again"),
    Command("vm.affinity_get", ("vm",), (), (), _affinity_get, "show the nodes a VM may run on"),
)
