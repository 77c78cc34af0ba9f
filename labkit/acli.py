"""acli: AHV's command line, on labkit's control plane (parsing and output; no I/O of its own).

One command line per call, as acli takes it: `net.create web vlan=50 ip_config=10.50.0.1/24`.
Output follows AHV where shared/reference/ahv-formats.md shows it: tables for lists,
protobuf text for `get`, `NAME: pending` / `NAME: complete` for tasks (scripts test for
"complete"), `Unknown keyword argument: X`. Where AHV's exact text is unknown the form here is
plain and says what happened. `run` takes a session: the live one (acli_shell.LiveSession)
applies changes to the lab; tests use an in-memory one to check the output.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from typing import Callable, Protocol

from .control import Change, Control, ControlError, NetworkRecord, NicRecord, VmRecord
from .errors import LabkitError
from .values import echo, printable_text


class AcliError(LabkitError):
    """A command line acli cannot run: nothing was changed."""


class Session(Protocol):
    def controlled(self):  # a context manager yielding the lab's Control, under its lock
        ...

    def apply(self, change: Change) -> None:
        ...


@dataclass(frozen=True)
class Command:
    name: str
    positional: tuple[str, ...]  # what the positional arguments are: "net", "vm", "mac", "name"
    keywords: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    run: Callable = None
    help: str = ""
    confirm: bool = False  # asks before it deletes (-y skips, as acli's)


@dataclass
class Output:
    text: list[str] = field(default_factory=list)
    data: object = None


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Call:
    command: Command
    args: tuple[str, ...]
    kw: dict


MAX_LINE = 4096


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
    if command is None:
        close = [c for c in COMMANDS if c.split(".")[0] == words[0].split(".")[0]] or sorted(COMMANDS)
        raise AcliError(f"Unknown command: {echo(words[0])}; commands: {', '.join(close)}")
    args, kw = [], {}
    for word in words[1:]:
        key, eq, value = word.partition("=")
        if not eq:
            args.append(word)
        elif key not in command.keywords:
            raise AcliError(f"Unknown keyword argument: {echo(key)}")  # AHV's words
        else:
            kw[key] = value
    if len(args) != len(command.positional):
        wanted = " ".join(p.upper() for p in command.positional)
        raise AcliError(f"usage: {command.name} {wanted} {_keywords_usage(command)}".rstrip())
    missing = [k for k in command.required if k not in kw]
    if missing:
        raise AcliError(f"{command.name} needs {', '.join(f'{k}=' for k in missing)}; "
                        f"usage: {command.name} {' '.join(p.upper() for p in command.positional)} {_keywords_usage(command)}")
    return Call(command, tuple(args), kw)


def _keywords_usage(command: Command) -> str:
    return " ".join(f"{k}=" if k in command.required else f"[{k}=]" for k in command.keywords)


def _int(kw: dict, key: str, low: int, high: int) -> int | None:
    if key not in kw:
        return None
    if not re.fullmatch(r"\d{1,9}", kw[key]) or not low <= int(kw[key]) <= high:  # bounded before int()
        raise AcliError(f"{key}={echo(kw[key])} is not a number from {low} to {high}")
    return int(kw[key])


def _bool(kw: dict, key: str) -> bool:
    value = kw.get(key, "false").lower()
    if value not in ("true", "false"):
        raise AcliError(f"{key}={echo(kw[key])} is not true or false")
    return value == "true"


def _memory(text: str | None) -> int | None:
    """acli's sizes (4G, 512M; a bare number is MiB) in MiB."""
    if text is None:
        return None
    match = re.fullmatch(r"(\d{1,9})\s*([MG])?(i?B)?", text, re.IGNORECASE)  # bounded before int()
    if not match:
        raise AcliError(f"memory={echo(text)} is not a size; write it like 128M or 2G")
    mib = int(match.group(1)) * (1024 if (match.group(2) or "M").upper() == "G" else 1)
    if not 16 <= mib <= 1024 * 1024:
        raise AcliError(f"memory={echo(text)} is out of range; give 16M to 1024G")
    return mib


def _vlans(text: str) -> list[int]:
    if not re.fullmatch(r"\d{1,4}(,\d{1,4})*,?", text):
        raise AcliError(f"trunked_networks={echo(text)} is not a list of VLAN ids; write it like 10,20,30")
    vlans = sorted({int(v) for v in text.split(",") if v})
    if not vlans or not all(1 <= v <= 4094 for v in vlans):
        raise AcliError(f"trunked_networks={echo(text)} must list VLAN ids from 1 to 4094")
    return vlans


def _vlan_mode(kw: dict) -> str | None:
    mode = kw.get("vlan_mode")
    if mode is not None and mode not in ("kAccess", "kTrunked"):
        raise AcliError(f"vlan_mode={echo(mode)} is not kAccess or kTrunked")
    return mode


# --------------------------------------------------------------------------- output


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows]]


def proto(name: str, fields: dict, indent: int = 0) -> list[str]:
    """Protobuf text, as acli's `get` prints it: keys sorted, strings quoted, lists repeated, blocks nested."""
    pad = "  " * indent
    out = [f"{pad}{name} {{"]
    for key in sorted(fields):
        value = fields[key]
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict):
                out += proto(key, item, indent + 1)
            elif isinstance(item, bool):
                out.append(f"{pad}  {key}: {'true' if item else 'false'}")
            elif isinstance(item, int):
                out.append(f"{pad}  {key}: {item}")
            elif item is not None:
                out.append(f"{pad}  {key}: {json.dumps(str(item))}")
    out.append(f"{pad}}}")
    return out


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


def vm_fields(vm: VmRecord) -> dict:
    config = {"memory_mb": vm.memory_mb, "name": vm.name, "nic_list": [nic_fields(n) for n in vm.nics],
              "num_cores_per_vcpu": 1, "num_vcpus": vm.num_vcpus, "vm_type": "kGuestVM"}
    return {"config": config, "logical_timestamp": vm.logical_timestamp,
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
    return ctl.net_create(args[0], _int(kw, "vlan", 0, 4094), kw.get("ip_config"), kw.get("vswitch_name"))


def _vm_list(ctl: Control, _args, _kw) -> Output:
    vms = ctl.vms()
    return Output(table(["VM name", "VM UUID"], [[v.name, v.uuid] for v in vms]), [v.v2() for v in vms])


def _vm_get(ctl: Control, args, _kw) -> Output:
    vms = ctl.vms(args[0])
    return Output([line for vm in vms for line in proto(vm.name, vm_fields(vm))], [v.v2() for v in vms])


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


def _host_list(ctl: Control, _args, _kw) -> Output:
    # AHV's full host.list header is not known (ahv-formats.md §2): column 1 is the hypervisor IP and
    # there are Node state and Schedulable columns; the other columns are labkit's choice.
    hosts = ctl.hosts()
    return Output(table(["Hypervisor IP", "Hypervisor name", "Host UUID", "Node state", "Schedulable", "CVM IP"],
                        [[h.ip, h.name, h.uuid, "AcropolisNormal", "True", h.cvm_ip] for h in hosts]),
                  [{"name": h.name, "uuid": h.uuid, "hypervisor_address": h.ip, "service_vmexternal_ip": h.cvm_ip,
                    "num_vms": h.vms} for h in hosts])


NET_KW = ("vlan", "ip_config", "vswitch_name")
NIC_KW = ("network", "ip", "request_ip", "vlan_mode", "trunked_networks", "mac", "model", "connected")
COMMANDS = {c.name: c for c in (
    Command("net.create", ("name",), NET_KW, ("vlan",), _net_create, "create a network (managed with ip_config=GW/PREFIX)"),
    Command("net.add_dhcp_pool", ("net",), ("start", "end"), ("start", "end"),
            lambda ctl, a, kw: ctl.net_add_dhcp_pool(a[0], kw["start"], kw["end"]), "add an address range to a managed network"),
    Command("net.update_dhcp_dns", ("net",), ("servers", "domains"), (),
            lambda ctl, a, kw: ctl.net_update_dhcp_dns(a[0], kw.get("servers"), kw.get("domains")),
            "set the DNS servers and search domains the network's DHCP hands out"),
    Command("net.list", (), (), (), _net_list, "list the networks"),
    Command("net.get", ("net",), (), (), _net_get, "show a network"),
    Command("net.list_vms", ("net",), (), (), _net_list_vms, "list the VM NICs on a network"),
    Command("net.delete", ("net",), (), (), lambda ctl, a, kw: ctl.net_delete(a[0]), "delete a network without NICs", True),
    Command("vm.create", ("name",), ("memory", "num_vcpus", "num_cores_per_vcpu"), (),
            lambda ctl, a, kw: ctl.vm_create(a[0], _memory(kw.get("memory")), _int(kw, "num_vcpus", 1, 256)),
            "create a VM (powered off) running the built-in guest"),
    Command("vm.nic_create", ("vm",), NIC_KW, ("network",), _vm_nic_create, "add a NIC to a VM"),
    Command("vm.nic_get", ("vm",), (), (), _vm_nic_get, "show a VM's NICs"),
    Command("vm.nic_update", ("vm", "mac"), ("network", "ip", "vlan_mode", "trunked_networks", "update_vlan_trunk_info"),
            (), _vm_nic_update, "move a NIC to another network, change its address or its VLAN mode"),
    Command("vm.nic_delete", ("vm", "mac"), (), (), lambda ctl, a, kw: ctl.nic_delete(a[0], a[1]), "remove a VM's NIC"),
    Command("vm.on", ("vm",), (), (), lambda ctl, a, kw: ctl.vm_power(a[0], True), "power VMs on (globs: web*)"),
    Command("vm.off", ("vm",), (), (), lambda ctl, a, kw: ctl.vm_power(a[0], False), "power VMs off (globs: web*)"),
    Command("vm.list", (), (), (), _vm_list, "list the user VMs"),
    Command("vm.get", ("vm",), (), (), _vm_get, "show VMs (globs: web*)"),
    Command("vm.delete", ("vm",), (), (), lambda ctl, a, kw: ctl.vm_delete(a[0]), "delete VMs (globs: web*)", True),
    Command("host.list", (), (), (), _host_list, "list the lab's nodes"),
)}


# --------------------------------------------------------------------------- running


def execute(session: Session, line: str, confirm: Callable[[str], bool] | None = None, say=print) -> Output:
    """Run one command line. `confirm(question)` is asked before deletes (None: do not ask), with
    the lab's lock released: the answer may take a while, other commands need not wait for it.
    `say` prints task lines as the change goes (pending before it, complete after)."""
    call = parse(line)
    asked = None
    if call.command.confirm and confirm is not None:
        with session.controlled() as ctl:  # what it would delete, to ask about
            preview = call.command.run(ctl, call.args, call.kw)
        if isinstance(preview, Output):
            return preview
        asked = _names(preview)
        what = "networks" if call.command.name.startswith("net.") else "VMs"
        if not confirm(f"Delete {len(asked)} {what}? (yes/no) "):
            return Output([f"{call.command.name}: not confirmed, nothing deleted"], [])
    with session.controlled() as ctl:
        result = call.command.run(ctl, call.args, call.kw)
        if isinstance(result, Output):
            return result
        names = _names(result)
        if asked is not None and names != asked:
            raise AcliError(f"{call.command.name}: the lab changed while you were asked (now {', '.join(names) or 'nothing'}); "
                              "nothing deleted, run it again")
        for name in names:
            say(f"{name}: pending")
        session.apply(result)
    return Output([f"{name}: complete" for name in names], [{"name": n, "status": "complete"} for n in names])


def _names(change) -> list[str]:
    """The VMs and networks a change touched, as acli's task lines name them."""
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
