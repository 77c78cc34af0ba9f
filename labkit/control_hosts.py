"""The control plane's hosts (pure): placement, live migration, maintenance mode, VM-host affinity.

A lab's node is an AHV host: its memory (Node.memory, the CVM's taken from it) holds the VMs
that run there, and a node in maintenance mode (AHV's EnteredMaintenanceMode, Schedulable
False) runs none. Placement, where AHV's scheduler would choose, takes the schedulable node in
the VM's affinity with the most free memory. A move is a change of the VM's node in the
topology; the plan carries a running VM's move out live (livechange.py). AHV's messages for a
host without room are not in public sources; the sentences here are labkit's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import names
from .control_base import ControlError
from .values import echo

if TYPE_CHECKING:
    from .control import Change

NODE_STATES = {False: "AcropolisNormal", True: "EnteredMaintenanceMode"}


@dataclass(frozen=True)
class HostRecord:
    name: str
    uuid: str
    ip: str
    cvm_ip: str
    vms: int
    maintenance: bool = False
    memory_mib: int = 0  # what VMs may use: the node's memory less its CVM's
    used_mib: int = 0  # by its running VMs

    @property
    def node_state(self) -> str:
        return NODE_STATES[self.maintenance]

    @property
    def schedulable(self) -> bool:
        return not self.maintenance

    @property
    def free_mib(self) -> int:
        return self.memory_mib - self.used_mib


class HostControl:
    """Control's hosts (mixed into control.Control: self.topo, self._change, self.vm, self.vms)."""

    def hosts(self) -> list[HostRecord]:
        out = []
        for n in self.topo.nodes:
            running = [vm for vm in self.topo.vms if vm.node == n.name and vm.power == "on"]
            out.append(HostRecord(n.name, names.uuid_for(self.topo.name, "host", n.name), str(n.host_ip.ip),
                                  str(n.cvm.ip.ip), sum(1 for vm in self.topo.vms if vm.node == n.name), n.maintenance,
                                  n.memory - n.cvm.memory, sum(vm.memory for vm in running)))
        return out

    def host(self, ref: str) -> HostRecord:
        found = next((h for h in self.hosts() if ref in (h.name, h.uuid, h.ip)), None)
        if found is None:
            raise ControlError(f"host {echo(ref)} does not exist; hosts: {', '.join(h.name for h in self.hosts())}")
        return found

    def placement(self, vm, exclude: tuple[str, ...] = (), adding: dict[str, int] | None = None) -> str | None:
        """The node a running `vm` (a topology Vm) goes to: schedulable, in its affinity, with room
        (`adding`: memory already promised to nodes in this change); the most free memory wins."""
        adding = adding or {}
        room = [(h.free_mib - adding.get(h.name, 0), h.name) for h in self.hosts()
                if h.schedulable and h.name not in exclude and (not vm.affinity or h.name in vm.affinity)
                and h.free_mib - adding.get(h.name, 0) >= vm.memory]
        return max(room, key=lambda r: (r[0], -self._order(r[1])))[1] if room else None

    def _order(self, node: str) -> int:
        return [n.name for n in self.topo.nodes].index(node)

    def vm_migrate(self, ref: str, host: str | None = None) -> Change:
        """vm.migrate: a running VM moves to `host` (or where placement says), live."""
        vm = self._spec(ref)
        if vm.power != "on":
            raise ControlError(f"VM {vm.name} is powered off; only a running VM migrates (vm.on places it on a host)")
        if host is None:
            target = self.placement(vm, exclude=(vm.node,))
            if target is None:
                raise ControlError(f"no other host can take VM {vm.name} ({vm.memory} MiB): "
                                   f"{self._why_not(vm, exclude=(vm.node,))}")
        else:
            target = self.host(host).name
            self._check_target(vm, target)
        vms = [v.model_copy(update={"home": None}) if v.name == vm.name else v for v in self.topo.vms]
        return self._moved("vm.migrate", {vm.name: target}, touched=(f"vm:{vm.name}",), vms=vms)

    def _check_target(self, vm, target: str) -> None:
        record = self.host(target)
        if target == vm.node:
            raise ControlError(f"VM {vm.name} already runs on host {target}; name another host")
        if not record.schedulable:
            raise ControlError(f"host {target} is in maintenance mode; it takes no VM (host.exit_maintenance_mode {target})")
        if vm.affinity and target not in vm.affinity:
            raise ControlError(f"host {target} is not in VM {vm.name}'s affinity ({', '.join(vm.affinity)}); "
                               f"choose one of those or change it (vm.affinity_set)")
        if record.free_mib < vm.memory:
            raise ControlError(f"host {target} has {record.free_mib} MiB free for VMs; VM {vm.name} needs {vm.memory} MiB")

    def _why_not(self, vm, exclude=()) -> str:
        reasons = []
        for h in self.hosts():
            if h.name in exclude:
                continue
            if not h.schedulable:
                reasons.append(f"{h.name} is in maintenance mode")
            elif vm.affinity and h.name not in vm.affinity:
                reasons.append(f"{h.name} is outside its affinity")
            else:
                reasons.append(f"{h.name} has {h.free_mib} MiB free")
        return "; ".join(reasons) or "the lab has no other host"

    def enter_maintenance(self, ref: str) -> Change:
        """host.enter_maintenance_mode: every running VM of the host migrates live to another (all
        or none: refused when one has nowhere to go), powered-off ones are moved with them, and the
        host takes no VM until it leaves maintenance mode."""
        record = self.host(ref)
        if record.maintenance:
            raise ControlError(f"host {record.name} is already in maintenance mode")
        moves, promised = {}, {}
        for vm in sorted((v for v in self.topo.vms if v.node == record.name), key=lambda v: -v.memory):
            if vm.power != "on":
                continue
            target = self.placement(vm, exclude=(record.name,), adding=promised)
            if target is None:
                raise ControlError(f"host {record.name} cannot enter maintenance mode: VM {vm.name} ({vm.memory} MiB) "
                                   f"has nowhere to go ({self._why_not(vm, exclude=(record.name,))}); power it off or "
                                   f"make room")
            moves[vm.name] = target
            promised[target] = promised.get(target, 0) + vm.memory
        for vm in self.topo.vms:  # powered-off VMs: on a host that takes them, when they are next powered on
            if vm.node == record.name and vm.power != "on":
                moves[vm.name] = next((h.name for h in self.hosts() if h.schedulable and h.name != record.name
                                       and (not vm.affinity or h.name in vm.affinity)), vm.node)
        nodes = [n.model_copy(update={"maintenance": True}) if n.name == record.name else n for n in self.topo.nodes]
        vms = [v.model_copy(update={"home": record.name}) if v.name in moves and moves[v.name] != record.name else v
               for v in self.topo.vms]
        return self._moved("host.enter_maintenance_mode", moves, touched=(f"host:{record.name}",), nodes=nodes, vms=vms)

    def check_maintenance(self, ref: str) -> str:
        """host.enter_maintenance_mode_check: AHV's verdict, without changing anything."""
        self.enter_maintenance(ref)  # raises, in the same words, what entering would refuse
        return "Ok to enter maintenance mode."

    def exit_maintenance(self, ref: str) -> Change:
        """host.exit_maintenance_mode: the host takes VMs again, and the VMs maintenance moved off it
        come back (running ones live, as AHV restores them), where the host has room for them."""
        record = self.host(ref)
        if not record.maintenance:
            raise ControlError(f"host {record.name} is not in maintenance mode")
        nodes = [n.model_copy(update={"maintenance": False}) if n.name == record.name else n for n in self.topo.nodes]
        free, moves = record.free_mib, {}
        for vm in sorted((v for v in self.topo.vms if v.home == record.name), key=lambda v: v.name):
            fits = vm.power != "on" or vm.memory <= free
            if fits and (not vm.affinity or record.name in vm.affinity):
                moves[vm.name] = record.name
                free -= vm.memory if vm.power == "on" else 0
        vms = [v.model_copy(update={"home": None}) if v.home == record.name else v for v in self.topo.vms]
        return self._moved("host.exit_maintenance_mode", moves, touched=(f"host:{record.name}",), nodes=nodes, vms=vms)

    def affinity_set(self, ref: str, host_list: list[str]) -> Change:
        """vm.affinity_set: the hosts the VM may run on; a running VM outside them migrates live."""
        vm = self._spec(ref)
        nodes = [self.host(h).name for h in host_list]
        if not nodes:
            raise ControlError("host_list= names no host; list the hosts the VM may run on, like host_list=node1,node2")
        pinned = vm.model_copy(update={"affinity": sorted(set(nodes), key=self._order)})
        moves = {}
        if vm.node not in nodes:
            target = self.placement(pinned) if vm.power == "on" else nodes[0]
            if target is None:
                raise ControlError(f"VM {vm.name} runs on {vm.node} and none of {', '.join(nodes)} can take it "
                                   f"({self._why_not(pinned, exclude=(vm.node,))})")
            moves[vm.name] = target
        vms = [pinned if v.name == vm.name else v for v in self.topo.vms]
        return self._moved("vm.affinity_set", moves, touched=(f"vm:{vm.name}",), vms=vms)

    def affinity_unset(self, ref: str) -> Change:
        vm = self._spec(ref)
        vms = [v.model_copy(update={"affinity": []}) if v.name == vm.name else v for v in self.topo.vms]
        return self._change("vm.affinity_unset", {"vms": vms}, touched=(f"vm:{vm.name}",))

    def _moved(self, verb: str, moves: dict[str, str], touched, nodes=None, vms=None) -> Change:
        vms = [v.model_copy(update={"node": moves[v.name]}) if v.name in moves else v for v in (vms or self.topo.vms)]
        update = {"vms": vms} | ({"nodes": nodes} if nodes is not None else {})
        return self._change(verb, update, touched=tuple(touched) + tuple(f"vm:{n}" for n in moves
                                                                         if f"vm:{n}" not in touched))

    def power_on_placement(self, matched: set[str]) -> dict[str, str]:
        """vm.on: VMs whose host is in maintenance mode, outside their affinity or without room go
        where placement says (never to a host in maintenance mode); raises when one has nowhere."""
        moves, promised = {}, {}
        hosts = {h.name: h for h in self.hosts()}
        for vm in self.topo.vms:
            if vm.name not in matched or vm.power == "on":
                continue
            here = hosts[vm.node]
            fits = here.schedulable and (not vm.affinity or vm.node in vm.affinity) \
                and here.free_mib - promised.get(vm.node, 0) >= vm.memory
            target = vm.node if fits else self.placement(vm, adding=promised)
            if target is None:
                raise ControlError(f"VM {vm.name} ({vm.memory} MiB) cannot be powered on: no host can take it "
                                   f"({self._why_not(vm)})")
            if target != vm.node:
                moves[vm.name] = target
            promised[target] = promised.get(target, 0) + vm.memory
        return moves
