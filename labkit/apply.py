"""Apply: carry a plan out through the adapters, in its order, batching where the plan allows.

OVS changes of one node go in one transaction; domains are defined and
started concurrently. Every step is idempotent, so a crash at any point is
repaired by running `lab.up` (or `lab.down`) again; each finished step is
appended to /run/labkit/<lab>/journal for the post-mortem.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from pathlib import Path

from typing import TYPE_CHECKING

from . import state
from .host import dhcp, relay
from .host.ovs import set_flows
from .model import Lab
from .plan import Action, Plan

if TYPE_CHECKING:  # the adapters come from the caller's Host; importing them is the caller's cost
    from .host.netlink import Netlink
    from .host.ovs import Ovs
    from .host.virt import Virt


class Applier:
    def __init__(self, ovs: Ovs, netlink: Netlink, virt: Virt, say=print, phase=None):
        self.ovs, self.netlink, self.virt, self.say = ovs, netlink, virt, say
        self.phase = phase or (lambda _name: contextlib.nullcontext())

    def apply(self, plan: Plan, lab: Lab | None) -> None:
        self.lab_name, self.lab = plan.lab, lab
        self._converged: set[str] = set()
        self._starting: list = []  # relays spawned, not yet ready
        journal = state.own_lab_dir(plan.lab) / "journal"
        try:
            for (verb, kind), group in itertools.groupby(plan.actions, key=lambda a: (a.verb, a.kind)):
                actions = list(group)
                started = time.monotonic()
                self.say(f"{verb} {kind}: {', '.join(_target(a) for a in actions)}")
                with self.phase(f"{verb} {kind}"):
                    STEPS[(verb, kind)](self, actions)
                state.append_private(journal, "".join(f"{time.strftime('%FT%T')} done {a} ({time.monotonic() - started:.2f}s)\n"
                                                      for a in actions))
            with self.phase("wait for the acli relay"):
                for starting in self._starting:
                    starting.wait()
        finally:
            state.bump_generation()  # readings of the host taken before this are stale

    # deletes -------------------------------------------------------------

    def _delete_domain(self, actions: list[Action]) -> None:
        self.virt.delete_domains([a.name for a in actions], self.lab_name)

    def _delete_network(self, actions: list[Action]) -> None:
        for a in actions:
            self.virt.delete_network(a.name, self.lab_name)

    def _delete_ovs_port(self, actions: list[Action]) -> None:
        self.ovs.converge([], self.lab_name, delete_ports=[a.name for a in actions])

    def _delete_ovs_bridge(self, actions: list[Action]) -> None:
        self.ovs.delete_bridges([a.name for a in actions])

    def _delete_veth(self, actions: list[Action]) -> None:
        for where, group in itertools.groupby(sorted(actions, key=lambda a: a.where), key=lambda a: a.where):
            self.netlink.delete_links([a.name for a in group], where or None)

    def _delete_dhcp(self, actions: list[Action]) -> None:
        for a in actions:
            dhcp.stop(self.lab_name, a.name)

    def _create_dhcp(self, actions: list[Action]) -> None:
        for a in actions:
            dhcp.start(self.lab_name, a.obj)

    _update_dhcp = _create_dhcp

    def _update_impair(self, actions: list[Action]) -> None:
        for a in actions:
            if a.obj is None:
                self.netlink.clear_qdisc(a.name, None)
            else:
                self.netlink.set_qdisc(a.name, None, *a.obj.qdisc())

    def _delete_relay(self, actions: list[Action]) -> None:
        for a in actions:
            relay.stop(self.lab_name)

    def _create_relay(self, actions: list[Action]) -> None:
        """Spawned first, waited for last (apply's end): its start overlaps the lab's building."""
        for a in actions:
            self._starting.append(relay.spawn(self.lab_name, a.obj))

    _update_relay = _create_relay

    def _update_ovs_flows(self, actions: list[Action]) -> None:
        from .names import flows_digest

        for a in actions:
            set_flows(a.name, self.lab_name, a.obj.flows)
            self.ovs.set_flows_digest(a.name, flows_digest(a.obj.flows) if a.obj.flows else "")

    def _delete_linux_bridge(self, actions: list[Action]) -> None:
        self.netlink.delete_links([a.name for a in actions], None)

    def _delete_netns(self, actions: list[Action]) -> None:
        for a in actions:
            self.netlink.delete_netns(a.name)

    # creates and updates -----------------------------------------------------

    def _create_netns(self, actions: list[Action]) -> None:
        for a in actions:
            self.netlink.create_netns(a.name)

    def _create_veth(self, actions: list[Action]) -> None:
        earlier = frozenset(n for peer, name, _ in state.intents(self.lab_name) for n in (peer, name))
        state.record_intent(self.lab_name, [(a.obj.peer, a.obj.name, a.obj.netns) for a in actions])
        for a in actions:
            veth = a.obj
            self.netlink.create_veth(veth, earlier)  # made and marked
            state.prune_intents(self.lab_name, [(veth.peer, veth.name, veth.netns)])

    def _update_veth(self, actions: list[Action]) -> None:
        for a in actions:
            self.netlink.update_veth(a.obj)

    def _create_linux_bridge(self, actions: list[Action]) -> None:
        # Write-ahead, as for veths: a bridge is marked in a second request after it exists, and
        # one killed in between is the lab's all the same (state.intents: name, name, no netns).
        intents = [(a.obj.name, a.obj.name, None) for a in actions]
        state.record_intent(self.lab_name, intents)
        for a in actions:
            self.netlink.create_bridge(a.obj)
        state.prune_intents(self.lab_name, intents)

    _update_linux_bridge = _create_linux_bridge

    def _create_ovs_bridge(self, actions: list[Action]) -> None:
        """A bridge or a port: the action carries its bridge, converged as a whole."""
        self._converge_bridges({a.obj.name: a.obj for a in actions})

    _update_ovs_bridge = _create_ovs_port = _update_ovs_port = _create_ovs_bridge

    def _attach_ovs_port(self, actions: list[Action]) -> None:
        """Ports whose device was made anew: removed and added again (ovs-vswitchd then opens the
        new device), in two transactions, the bridge converged whole the second time."""
        self.ovs.converge([], self.lab_name, delete_ports=[a.name for a in actions])
        self._converged -= {a.obj.name for a in actions}
        self._converge_bridges({a.obj.name: a.obj for a in actions})

    def _converge_bridges(self, wanted: dict) -> None:
        """One OVSDB transaction per node (the ToR counts as one), never one per port."""
        bridges = [b for name, b in wanted.items() if name not in self._converged]
        for _node, group in itertools.groupby(sorted(bridges, key=lambda b: b.node or ""), key=lambda b: b.node):
            group = list(group)
            self.ovs.converge(group, self.lab_name)
            self._converged.update(b.name for b in group)

    def _create_route(self, actions: list[Action]) -> None:
        for a in actions:
            self.netlink.set_route(a.where, a.name, a.obj)

    _update_route = _create_route

    def _create_network(self, actions: list[Action]) -> None:
        for a in actions:
            self.virt.create_network(a.obj)

    def _update_network(self, actions: list[Action]) -> None:
        for a in actions:
            self.virt.delete_network(a.name, self.lab_name)
            self.virt.create_network(a.obj)

    def _start_network(self, actions: list[Action]) -> None:
        for a in actions:
            self.virt.start_network(a.name)

    def _attach_veth(self, actions: list[Action]) -> None:
        for a in actions:
            self.netlink.attach(a.name, a.obj)

    def _create_domain(self, actions: list[Action]) -> None:
        self._prepare(actions)
        try:
            self.virt.create_domains([a.obj for a in actions], say=self.say,
                                     start={a.name for a in actions if self.lab.domain(a.name).power_on})
        finally:  # the siblings of a domain that failed to start run too: their taps as well
            self._no_ipv6_on_taps([a for a in actions if self.lab.domain(a.name).power_on])

    def _stop_domain(self, actions: list[Action]) -> None:
        self.virt.stop_domains([a.name for a in actions])

    def _update_domain(self, actions: list[Action]) -> None:
        live = [a for a in actions if not isinstance(a.obj, str)]
        for a in live:  # hot-plugged disks, a live migration: the guest keeps running
            paused = self.virt.update_live(a.name, a.obj, self.lab_name)
            if paused is not None:
                self.say(f"  moved {a.name} to node {a.obj.node} live (the guest paused {paused:.2f} s)")
        self._no_ipv6_on_taps([a for a in live if a.obj.moves])  # its taps were made anew
        restart = [a for a in actions if isinstance(a.obj, str)]
        if restart:
            self.virt.delete_domains([a.name for a in restart], self.lab_name)
            self._create_domain(restart)

    # storage -------------------------------------------------------------

    def _create_pool(self, actions: list[Action]) -> None:
        for a in actions:
            pool, xml = a.obj
            self._storage().create_pool(pool, xml)

    def _create_volume(self, actions: list[Action]) -> None:
        for a in actions:  # in plan order: an image's copy before the clones made over it
            pool, vol, xml = a.obj
            self._storage().create_volume(pool, vol, xml, say=self.say)

    def _update_volume(self, actions: list[Action]) -> None:
        for a in actions:
            pool, vol, _ = a.obj
            self._storage().grow_volume(pool, vol)

    def _delete_volume(self, actions: list[Action]) -> None:
        for a in actions:
            self._storage().delete_volume(a.where, a.name)

    def _delete_pool(self, actions: list[Action]) -> None:
        for a in actions:
            self._storage().delete_pool(a.name, self.lab_name)

    def _storage(self):
        from .host.storage import Storage

        return Storage(self.virt)

    def _update_vm_port(self, actions: list[Action]) -> None:
        from .plan import wanted_vlans

        self.ovs.set_vm_ports([(a.name, *wanted_vlans(a.obj)) for a in actions])

    def _start_domain(self, actions: list[Action]) -> None:
        self._prepare(actions)
        try:
            self.virt.start_domains([a.name for a in actions], say=self.say)
        finally:
            self._no_ipv6_on_taps(actions)

    # helpers -------------------------------------------------------------

    def _prepare(self, actions: list[Action]) -> None:
        """The directories of the serial logs and agent sockets (libvirt creates neither), and the
        disks of VMs with their own image."""
        for a in actions:
            dom = self.lab.domain(a.name)
            Path(dom.serial_log).parent.mkdir(parents=True, exist_ok=True)
            state.private_dir(Path(dom.agent_socket).parent)
            if dom.image or dom.seed:
                from .features import disks  # pycdlib: only for VMs that boot their own OS

                disks.prepare(dom)

    def _no_ipv6_on_taps(self, actions: list[Action]) -> None:
        """libvirt brings the taps up in the workstation's namespace; take IPv6 (link-local) off them
        (domains that did not start have none)."""
        for a in actions:
            for ifname in self.virt.ifnames(a.name):
                self.netlink.disable_ipv6(ifname)



# Every plan action, by (verb, kind), and the step that carries it out (plan.ORDER is their order).
STEPS = {
    ("stop", "domain"): Applier._stop_domain,
    ("delete", "domain"): Applier._delete_domain,
    ("delete", "dhcp"): Applier._delete_dhcp,
    ("delete", "relay"): Applier._delete_relay,
    ("delete", "network"): Applier._delete_network,
    ("delete", "ovs-port"): Applier._delete_ovs_port,
    ("delete", "ovs-bridge"): Applier._delete_ovs_bridge,
    ("delete", "veth"): Applier._delete_veth,
    ("delete", "linux-bridge"): Applier._delete_linux_bridge,
    ("delete", "netns"): Applier._delete_netns,
    ("create", "netns"): Applier._create_netns,
    ("create", "veth"): Applier._create_veth,
    ("update", "veth"): Applier._update_veth,
    ("create", "linux-bridge"): Applier._create_linux_bridge,
    ("update", "linux-bridge"): Applier._update_linux_bridge,
    ("create", "ovs-bridge"): Applier._create_ovs_bridge,
    ("update", "ovs-bridge"): Applier._update_ovs_bridge,
    ("create", "ovs-port"): Applier._create_ovs_port,
    ("update", "ovs-port"): Applier._update_ovs_port,
    ("attach", "ovs-port"): Applier._attach_ovs_port,
    ("update", "ovs-flows"): Applier._update_ovs_flows,
    ("create", "route"): Applier._create_route,
    ("update", "route"): Applier._update_route,
    ("create", "dhcp"): Applier._create_dhcp,
    ("update", "dhcp"): Applier._update_dhcp,
    ("create", "relay"): Applier._create_relay,
    ("update", "impair"): Applier._update_impair,
    ("update", "relay"): Applier._update_relay,
    ("create", "network"): Applier._create_network,
    ("update", "network"): Applier._update_network,
    ("start", "network"): Applier._start_network,
    ("attach", "veth"): Applier._attach_veth,
    ("create", "domain"): Applier._create_domain,
    ("update", "domain"): Applier._update_domain,
    ("start", "domain"): Applier._start_domain,
    ("update", "vm-port"): Applier._update_vm_port,
    ("create", "pool"): Applier._create_pool,
    ("create", "volume"): Applier._create_volume,
    ("update", "volume"): Applier._update_volume,
    ("delete", "volume"): Applier._delete_volume,
    ("delete", "pool"): Applier._delete_pool,
}


def _target(action: Action) -> str:
    return f"{action.where}/{action.name}" if action.where else action.name
