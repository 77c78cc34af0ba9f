"""acli: AHV's command line, on labkit's control plane (parsing and output; no I/O of its own).

One command line per call, as acli takes it: `net.create web vlan=50 ip_config=10.50.0.1/24`.
Output follows AHV where shared/reference/ahv-formats.md shows it: tables for lists,
protobuf text for `get`, `NAME: pending` / `NAME: complete` for tasks (scripts test for
"complete"), `Unknown keyword argument: X`. Where AHV's exact text is unknown the form here is
plain and says what happened. `run` takes a session: the live one (acli_shell.LiveSession)
applies changes to the lab; tests use an in-memory one to check the output.
"""

from __future__ import annotations

import difflib
import json
import re
import shlex
from typing import Callable

from .acli_base import (MAX_LINE, AcliError, Call, Command, HostAction, Output, Session, _bool, _int, _keywords_usage,
                        _memory, _usage, _vlan_mode, _vlans, proto, table)
from .acli_hosts import COMMANDS as HOST_COMMANDS
from .acli_storage import COMMANDS as STORAGE_COMMANDS, disk_fields
from .control import Change, Control, NetworkRecord, NicRecord, VmRecord
from .values import echo, printable_text

__all__ = ["AcliError", "Command", "HostAction", "Output", "Session", "execute", "parse"]


# --------------------------------------------------------------------------- parsing


# What other hypervisors' tools call AHV's commands (virsh start, govc vm.power -on...)
OTHER_WORDS = {"vm.start": "vm.on", "vm.stop": "vm.off", "vm.destroy": "vm.off", "vm.poweron": "vm.on",
               "vm.poweroff": "vm.off", "vm.remove": "vm.delete", "vm.rename": "vm.update", "vm.edit": "vm.update"}


def parse(line: str) -> Call:
    if len(line) > MAX_LINE:
        raise AcliError(f"the command line is {len(line):,} characters long; acli reads at most {MAX_LINE:,}")
    if not printable_text(line):
        bad = next(ch for ch in line if not printable_text(ch))
        raise AcliError(f"the command line holds the control character {bad!r}; type printable characters only")
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise AcliError(f"cannot read the command line ({exc}); check the quotes") from None
    if not words:
        raise AcliError("empty command; type help for the commands")
    command = COMMANDS.get(words[0])
    if command is None:  # AHV's words, then the nearest commands (`help` lists them all)
        close = [OTHER_WORDS[words[0]]] if words[0] in OTHER_WORDS else \
            difflib.get_close_matches(words[0], COMMANDS, n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(close)}?" if close else "help lists the commands"
        raise AcliError(f"Unknown command: {echo(words[0])}; {hint}")
    args, kw, notes = [], {}, []
    for word in words[1:]:
        key, eq, value = word.partition("=")
        if not eq:
            args.append(word)
        elif key in command.unmodelled:
            notes.append(f"not modelled in this lab: {key}")
        elif key not in command.keywords:
            close = difflib.get_close_matches(key, command.keywords + command.unmodelled, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise AcliError(f"Unknown keyword argument: {echo(key)}{hint}")  # AHV's words, and a hint
        else:
            kw[key] = value
    if len(args) != len(command.positional):
        raise AcliError(_usage(command))
    missing = [k for k in command.required if k not in kw]
    if missing:
        raise AcliError(f"{command.name} needs {', '.join(f'{k}=' for k in missing)}; {_usage(command)}")
    return Call(command, tuple(args), kw, tuple(notes))


def network_fields(net: NetworkRecord) -> dict:
    """net.get: field names from Prism v2's network (no real net.get sample is known)."""
    fields = {"identifier": net.vlan_id, "logical_timestamp": net.logical_timestamp, "name": net.name,
              "uuid": net.uuid, "vswitch_name": net.vswitch_name}
    if net.ip_config is not None:
        v2 = net.v2()["ip_config"]
        fields["ip_config"] = {
            "default_gateway": v2["default_gateway"], "dhcp_server_address": v2["dhcp_server_address"],
            "network_address": v2["network_address"], "prefix_length": v2["prefix_length"],
            "pool": [{"range": p["range"]} for p in v2["pool"]],
            **({"dhcp_options": v2["dhcp_options"]} if v2["dhcp_options"] else {})}
    return fields


def nic_fields(nic: NicRecord) -> dict:
    """vm.get's nic_list, as a real capture shows it (an IPAM NIC adds ip_address and network_type)."""
    fields = {"mac_addr": nic.mac, "network_name": nic.network, "network_uuid": nic.network_uuid,
              "type": "kNormalNic", "uuid": nic.uuid, "vlan_mode": nic.vlan_mode}
    if nic.trunk:
        fields["trunked_networks"] = list(nic.trunked_networks)
    if nic.managed:
        fields |= {"ip_address": nic.ip, "network_type": "kNativeNetwork"}
    return fields


def vm_fields(vm: VmRecord, host_uuid: str = "", uuids: dict[str, str] | None = None) -> dict:
    # disk_list, boot and host_name/host_uuid are inferred from AHV's VM spec (not from a capture)
    boot, uuids = dict(vm.boot), uuids or {}  # uuids: the hosts' UUIDs by name
    config = {"memory_mb": vm.memory_mb, "name": vm.name, "nic_list": [nic_fields(n) for n in vm.nics],
              "num_cores_per_vcpu": vm.cores_per_vcpu, "num_vcpus": vm.num_vcpus, "vm_type": "kGuestVM",
              "boot": boot, "disk_list": [disk_fields(d) for d in vm.disks]}
    if vm.affinity:
        config["affinity"] = {"host_uuids": [uuids.get(h, h) for h in vm.affinity]}
    return {"config": config, "host_name": vm.host, "host_uuid": host_uuid, "logical_timestamp": vm.logical_timestamp,
            "state": "kOn" if vm.power_state == "on" else "kOff", "uuid": vm.uuid}


# --------------------------------------------------------------------------- commands


def _net_list(ctl: Control, _args, _kw) -> Output:
    nets = ctl.networks()
    return Output(table(["Network name", "Network UUID", "Type", "Identifier"],
                        [[n.name, n.uuid, "VLAN", str(n.vlan_id)] for n in nets]), [n.v2() for n in nets])


def _net_get(ctl: Control, args, _kw) -> Output:
    net = ctl.network(args[0])
    return Output(proto(net.name, network_fields(net)), net.v2())


def _net_list_vms(ctl: Control, args, _kw) -> Output:
    net = ctl.network(args[0])
    rows = [[vm.uuid, vm.name, nic.mac, nic.ip or "-"] for vm in ctl.vms() for nic in vm.nics if nic.network == net.name]
    return Output(table(["VM UUID", "VM name", "MAC address", "IP address"], rows),
                  [{"vm_uuid": r[0], "vm_name": r[1], "mac_address": r[2], "ip_address": None if r[3] == "-" else r[3]}
                   for r in rows])


def _net_create(ctl: Control, args, kw) -> Change:
    return ctl.net_create(args[0], _int(kw, "vlan", 0, 4094), kw.get("ip_config"), kw.get("vswitch_name"),
                          kw.get("dhcp_address"))


def _vm_get(ctl: Control, args, _kw) -> Output:
    vms = ctl.vms(args[0])
    hosts = {h.name: h.uuid for h in ctl.hosts()}
    return Output([line for vm in vms for line in proto(vm.name, vm_fields(vm, hosts.get(vm.host, ""), hosts))],
                  [v.v2() for v in vms])


def _vm_nic_get(ctl: Control, args, _kw) -> Output:
    vm = ctl.vm(args[0])
    return Output([line for nic in vm.nics for line in proto(nic.mac, nic_fields(nic))], [n.v2() for n in vm.nics])


def _vm_nic_create(ctl: Control, args, kw) -> Change:
    if kw.get("model", "virtio") != "virtio" or kw.get("connected", "true") != "true":
        raise AcliError("lab NICs are virtio and connected; leave model= and connected= out")
    mode = _vlan_mode(kw)
    trunked = _vlans(kw["trunked_networks"]) if "trunked_networks" in kw else None
    if trunked and mode != "kTrunked":
        raise AcliError("trunked_networks= needs vlan_mode=kTrunked")
    if mode == "kTrunked" and trunked is None:
        trunked = []
    return ctl.nic_create(args[0], kw["network"], ip=kw.get("ip"), request_ip=_bool(kw, "request_ip"),
                          trunked_networks=trunked, mac=kw.get("mac"))


def _vm_nic_update(ctl: Control, args, kw) -> Change:
    mode = _vlan_mode(kw)
    if (mode or "trunked_networks" in kw) and not _bool(kw, "update_vlan_trunk_info"):
        raise AcliError("changing vlan_mode or trunked_networks needs update_vlan_trunk_info=true")
    trunked = _vlans(kw["trunked_networks"]) if "trunked_networks" in kw else None
    if mode == "kTrunked" and trunked is None:
        trunked = list(ctl.nic(args[0], args[1]).trunked_networks)
    return ctl.nic_update(args[0], args[1], network=kw.get("network"), ip=kw.get("ip"),
                          trunked_networks=trunked, access=mode == "kAccess")


def _vm_list(ctl: Control, _args, kw) -> Output:
    state = kw.get("power_state")
    if state not in (None, "on", "off"):
        raise AcliError(f"power_state={echo(state)} is not on or off")
    vms = [v for v in ctl.vms() if state is None or v.power_state == state]
    return Output(table(["VM name", "VM UUID"], [[v.name, v.uuid] for v in vms]), [v.v2() for v in vms])


def _vm_nic_list(ctl: Control, args, _kw) -> Output:
    # vm.nic_list's columns are labkit's (no AHV capture is known)
    vm = ctl.vm(args[0])
    rows = [[n.mac, n.network or "-", n.ip or "-", n.vlan_mode, ",".join(map(str, n.trunked_networks)) or "-"]
            for n in vm.nics]
    return Output(table(["MAC address", "Network", "IP address", "VLAN mode", "Trunked networks"], rows),
                  [n.v2() for n in vm.nics])


def _bulk(text: str) -> list[str]:
    """AHV's bulk names: web[1..5] is web1 to web5, testVM[000..999] zero-padded; else the one name."""
    match = re.fullmatch(r"(.*)\[(\d{1,4})\.\.(\d{1,4})\](.*)", text)
    if not match:
        return [text]
    head, start, end, tail = match.groups()
    low, high = int(start), int(end)
    if high < low or high - low >= 1000:
        raise AcliError(f"{echo(text)}: a range counts up, 1000 names at most (web[1..5], testVM[000..099])")
    width = len(start) if start.startswith("0") else 0
    return [f"{head}{n:0{width}d}{tail}" for n in range(low, high + 1)]


def _vm_create(ctl: Control, args, kw) -> Change:
    memory, vcpus, cores = _memory(kw.get("memory")), _int(kw, "num_vcpus", 1, 256), _int(kw, "num_cores_per_vcpu", 1, 256)
    return ctl.vm_create_many(_bulk(args[0]), memory, vcpus, cores, uefi=_bool(kw, "uefi_boot"))


def _vm_clone(ctl: Control, args, kw) -> Change:
    return ctl.vm_clone(_bulk(args[0]), kw["clone_from_vm"])


def _vm_update(ctl: Control, args, kw) -> Change:
    if not kw:
        raise AcliError("vm.update needs something to change: memory=, num_vcpus=, num_cores_per_vcpu=, name= or uefi_boot=")
    return ctl.vm_update(args[0], _memory(kw.get("memory")), _int(kw, "num_vcpus", 1, 256),
                         _int(kw, "num_cores_per_vcpu", 1, 256), kw.get("name"),
                         _bool(kw, "uefi_boot") if "uefi_boot" in kw else None)


def _power(verb: str, operation: str, off: bool = False):
    """vm.shutdown and its kin: a host action on the running VMs the pattern matches."""
    def run(ctl: Control, args, _kw) -> HostAction:
        matched = ctl.vms(args[0])
        off_ones = [v.name for v in matched if v.power_state != "on"]
        if off_ones:
            raise AcliError(f"vm.{verb}: {', '.join(off_ones)} {'is' if len(off_ones) == 1 else 'are'} powered off")
        return HostAction(verb, tuple(v.name for v in matched), operation, ctl.vm_power(args[0], False) if off else None)
    return run


def _net_update(ctl: Control, args, kw) -> Change:
    return ctl.net_update(args[0], _int(kw, "vlan", 0, 4094))


def _vswitch_list(ctl: Control, _args, _kw) -> Output:
    switches = ctl.virtual_switches()
    return Output(table(["Virtual switch", "UUID", "Bridge"], [[v["name"], v["uuid"], v["bridge"]] for v in switches]),
                  switches)


def _vswitch_get(ctl: Control, args, _kw) -> Output:
    # field names are labkit's, after Prism's virtual switch (no acli capture is known)
    found = next((v for v in ctl.virtual_switches() if args[0] in (v["name"], v["uuid"], v["bridge"])), None)
    if found is None:
        raise AcliError(f"virtual switch {echo(args[0])} does not exist; virtual switches: "
                        f"{', '.join(v['name'] for v in ctl.virtual_switches())}")
    fields = {"name": found["name"], "uuid": found["uuid"], "bridge_name": found["bridge"],
              "host_list": [{"host_name": h["host"], "bond_name": h["bond"], "bond_mode": h["bond_mode"],
                             "lacp": h["lacp"], "mtu": h["mtu"], "uplinks": h["uplinks"]} for h in found["hosts"]]}
    return Output(proto(found["name"], fields), found)


NET_KW = ("vlan", "ip_config", "vswitch_name", "dhcp_address")
NIC_KW = ("network", "ip", "request_ip", "vlan_mode", "trunked_networks", "mac", "model", "connected")
# Keywords AHV's vm.create and vm.update take that this lab does not model: accepted with a note.
VM_UNMODELLED = ("secure_boot", "ha_priority", "virtual_tpm", "machine_type", "hwclock_timezone",
                 "cpu_passthrough", "vcpu_hard_pin", "agent_vm", "annotation", "description", "extra_flags",
                 "gpu", "vga_console", "memory_overcommit", "num_threads_per_core", "hardware_virtualization",
                 "windows_credential_guard", "disable_branding", "cbr_not_capable", "vnuma_nodes")
COMMANDS = {c.name: c for c in (
    Command("net.create", ("name",), NET_KW, ("vlan",), _net_create,
            "create a network (managed with ip_config=GW/PREFIX; its DHCP server dhcp_address=, else the last address)",
            unmodelled=("annotation",)),
    Command("net.update", ("net",), ("vlan",), (), _net_update, "move a network to another VLAN (its ports are tagged anew)",
            unmodelled=("annotation",)),
    Command("net.add_dhcp_pool", ("net",), ("start", "end"), ("start", "end"),
            lambda ctl, a, kw: ctl.net_add_dhcp_pool(a[0], kw["start"], kw["end"]), "add an address range to a managed network"),
    # net.del_dhcp_pool and net.clear_dhcp_dns: labkit's names for what Prism's network page does (no acli source known)
    Command("net.del_dhcp_pool", ("net",), ("start", "end"), ("start", "end"),
            lambda ctl, a, kw: ctl.net_del_dhcp_pool(a[0], kw["start"], kw["end"]), "remove an address range from a managed network"),
    Command("net.update_dhcp_dns", ("net",), ("servers", "domains"), (),
            lambda ctl, a, kw: ctl.net_update_dhcp_dns(a[0], kw.get("servers"), kw.get("domains")),
            "set the DNS servers and search domains the network's DHCP hands out"),
    Command("net.clear_dhcp_dns", ("net",), (), (), lambda ctl, a, kw: ctl.net_clear_dhcp_dns(a[0]),
            "remove the DNS servers, search domains and domain name the network's DHCP hands out"),
    Command("net.list", (), (), (), _net_list, "list the networks"),
    Command("net.get", ("net",), (), (), _net_get, "show a network"),
    Command("net.list_vms", ("net",), (), (), _net_list_vms, "list the VM NICs on a network"),
    Command("net.delete", ("net",), (), (), lambda ctl, a, kw: ctl.net_delete(a[0]), "delete a network without NICs", True),
    Command("net.list_virtual_switch", (), (), (), _vswitch_list, "list the virtual switches (vs0 is br0)"),
    Command("net.get_virtual_switch", ("vswitch",), (), (), _vswitch_get,
            "show a virtual switch: its bridge, bond and uplinks per host"),
    Command("vm.create", ("name",), ("memory", "num_vcpus", "num_cores_per_vcpu", "uefi_boot"), (), _vm_create,
            "create VMs (powered off; bulk: web[1..5]) running the built-in guest", unmodelled=VM_UNMODELLED),
    Command("vm.clone", ("name",), ("clone_from_vm",), ("clone_from_vm",), _vm_clone,
            "clone a VM (bulk: web[001..010]): its size and NICs, with MACs and addresses of their own",
            unmodelled=VM_UNMODELLED + ("clone_from_snapshot",)),
    Command("vm.update", ("vm",), ("memory", "num_vcpus", "num_cores_per_vcpu", "name", "uefi_boot"), (), _vm_update,
            "change a VM's memory, vCPUs, cores per vCPU or name (a running VM restarts)", unmodelled=VM_UNMODELLED),
    Command("vm.nic_create", ("vm",), NIC_KW, ("network",), _vm_nic_create, "add a NIC to a VM"),
    Command("vm.nic_get", ("vm",), (), (), _vm_nic_get, "show a VM's NICs"),
    Command("vm.nic_list", ("vm",), (), (), _vm_nic_list, "list a VM's NICs"),
    Command("vm.nic_update", ("vm", "mac"), ("network", "ip", "vlan_mode", "trunked_networks", "update_vlan_trunk_info"),
            (), _vm_nic_update, "move a NIC to another network, change its address or its VLAN mode"),
    Command("vm.nic_delete", ("vm", "mac"), (), (), lambda ctl, a, kw: ctl.nic_delete(a[0], a[1]), "remove a VM's NIC"),
    Command("vm.on", ("vm",), (), (), lambda ctl, a, kw: ctl.vm_power(a[0], True), "power VMs on (globs: web*)"),
    Command("vm.off", ("vm",), (), (), lambda ctl, a, kw: ctl.vm_power(a[0], False), "power VMs off, at once (globs: web*)"),
    Command("vm.shutdown", ("vm",), (), (), _power("shutdown", "VmSetPowerState", off=True),
            "shut VMs down: each guest powers itself off (powered off after 30 s if it does not)"),
    Command("vm.reboot", ("vm",), (), (), _power("reboot", "VmReboot"), "reboot VMs: each guest restarts itself"),
    Command("vm.reset", ("vm",), (), (), _power("reset", "VmReset"), "reset VMs, as their reset button"),
    Command("vm.power_cycle", ("vm",), (), (), _power("power_cycle", "VmPowerCycle"), "power VMs off and on again"),
    Command("vm.pause", ("vm",), (), (), _power("pause", "VmPause"), "pause VMs (their guests stop where they are)"),
    Command("vm.resume", ("vm",), (), (), _power("resume", "VmResume"), "resume paused VMs"),
    Command("vm.list", (), ("power_state",), (), _vm_list, "list the user VMs (power_state=on|off)"),
    Command("vm.get", ("vm",), (), (), _vm_get, "show VMs (globs: web*)"),
    Command("vm.delete", ("vm",), (), (), lambda ctl, a, kw: ctl.vm_delete(a[0]), "delete VMs (globs: web*)", True,
            unmodelled=("delete_snapshots",)),
    *STORAGE_COMMANDS,
    *HOST_COMMANDS,
)}


# --------------------------------------------------------------------------- running


def execute(session: Session, line: str, confirm: Callable[[str], bool] | None = None, say=print) -> Output:
    """Run one command line. `confirm(question)` is asked before deletes (None: do not ask), with
    the lab's lock released: the answer may take a while, other commands need not wait for it.
    `say` prints task lines as the change goes (pending before it, complete after)."""
    call = parse(line)
    notes = list(call.notes)  # keywords taken and not modelled: said with the answer, not before a refusal
    asked = None
    run = (lambda ctl: call.command.run(ctl, call.args, call.kw, session)) if call.command.session else \
        (lambda ctl: call.command.run(ctl, call.args, call.kw))
    if call.command.confirm and confirm is not None:
        with session.controlled() as ctl:  # what it would delete, to ask about
            preview = run(ctl)
        if isinstance(preview, Output):
            return preview
        asked = _names(preview)
        what = {"net": "networks", "image": "images"}.get(call.command.name.split(".")[0], "VMs")
        if not confirm(f"Delete {len(asked)} {what}? (yes/no) "):
            return Output([f"{call.command.name}: not confirmed, nothing deleted"], [])
    with session.controlled() as ctl:
        result = run(ctl)
        if isinstance(result, Output):
            return Output(notes + result.text, result.data)
        names = _names(result)
        if asked is not None and names != asked:
            raise AcliError(f"{call.command.name}: the lab changed while you were asked (now {', '.join(names) or 'nothing'}); "
                              "nothing deleted, run it again")
        for note in notes:  # said before the change goes, once the command is taken
            say(note)
        for name in names:
            say(f"{name}: pending")
        if isinstance(result, HostAction):
            session.act(result)
            if result.then is not None:
                session.apply(result.then)
        else:
            session.apply(result)
    return Output([f"{name}: complete" for name in names], [{"name": n, "status": "complete"} for n in names])


SUB_ENTITY = ("vm.nic_create", "vm.nic_update", "vm.nic_delete", "vm.clone", "vm.disk_create", "vm.disk_update",
              "vm.disk_delete", "image.create", "image.update", "image.delete", "host.enter_maintenance_mode",
              "host.exit_maintenance_mode")


def _names(change) -> list[str]:
    """What acli's task lines name: the VMs and networks a change touched, or, for a change of a
    VM's part or a clone, the operation (NicCreate: complete, as AHV prints it)."""
    if isinstance(change, HostAction):
        return list(change.vms)
    if change.verb in SUB_ENTITY:
        return [change.operation] * max(1, sum(1 for key in change.touched if key.startswith("vm:")) if change.verb == "vm.clone" else 1)
    return [key.split(":", 1)[1] for key in (*change.touched, *change.deleted) if not key.startswith("nic:")]


def as_json(output: Output | None, error: str | None) -> str:
    """`acli -o json`: {"data": ..., "error": ..., "status": 0 | 1}."""
    return json.dumps({"data": output.data if output else None, "error": error, "status": 1 if error else 0}, indent=1)


def help_text() -> list[str]:
    out = []
    for c in COMMANDS.values():
        out += [f"{c.name} {' '.join([p.upper() for p in c.positional] + [_keywords_usage(c)])}".rstrip(), f"    {c.help}"]
    return out


def complete(before: str, text: str, ctl: Control | None) -> list[str]:
    """Tab completion: `before` is the line up to the word being completed, `text` that word."""
    words = before.split()
    if not words:
        return sorted(c + " " for c in [*COMMANDS, "help", "exit"] if c.startswith(text))
    command = COMMANDS.get(words[0])
    if command is None:
        return []
    vms = [v.name for v in ctl.vms()] if ctl else []
    nets = [n.name for n in ctl.networks()] if ctl else []
    key = before.rsplit(" ", 1)[-1][:-1] if before.endswith("=") else None
    if key is not None:  # a value
        values = {"network": nets, "vlan_mode": ["kAccess", "kTrunked"], "request_ip": ["true"],
                  "update_vlan_trunk_info": ["true"], "vswitch_name": ["br0", "br1"]}.get(key, [])
        return [v for v in values if v.startswith(text)]
    given = len([w for w in words[1:] if "=" not in w])
    if given < len(command.positional):
        kind = command.positional[given]
        pool = vms if kind == "vm" else nets if kind == "net" else \
            [n.mac for n in ctl.vm(words[-1]).nics] if kind == "mac" and ctl and words[-1] in vms else []
        return [p + " " for p in pool if p.startswith(text)]
    used = {w.split("=")[0] for w in words[1:] if "=" in w}
    return [k + "=" for k in command.keywords if k.startswith(text) and k not in used]
