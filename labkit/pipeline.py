"""labkit's pipeline, one call a line: load -> validate -> resolve -> render -> observe -> plan -> apply.

`desire` is the pure half (tests call it with recorded host states); `up`,
`down` and `status` are the commands, each holding the lab's lock and one
connection to each real system. `topology` (pydantic) and `render` (jinja2,
lxml) are imported by the functions that use them: lab.down needs neither.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from typing import TYPE_CHECKING

from . import images, model, names, paths, plan, state
from .errors import HostError, LabkitError
from .hoststate import HostState

if TYPE_CHECKING:
    from . import render, topology


@dataclass(frozen=True)
class Desired:
    """Everything decided for one lab on one host: the model, its documents, and what differs from AHV."""

    lab: model.Lab
    adapt: render.Adaptation
    docs: dict[str, str]

    @property
    def deviations(self) -> list[model.Deviation]:
        return list(self.lab.deviations) + self.adapt.deviations(self.lab)


def load(path: str | None, profile: str | None = None) -> topology.Topology:
    from . import topology

    topo = topology.load(path)  # parse + validate (raises TopologyError with every problem)
    if profile is not None and profile not in ("lab", "fidelity"):  # model_copy would not validate it
        raise LabkitError(f"--profile {profile} is not a profile; use lab or fidelity")
    return topo.model_copy(update={"profile": profile}) if profile else topo


def with_addresses(topo: topology.Topology) -> topology.Topology:
    """IPAM on this host: `topo` with an address on every NIC of a managed network, where a NIC the
    lab already has keeps the address its effective topology bound to it (model.resolve, pure,
    hands out addresses as if the lab were new)."""
    from . import ipam, topology

    if not any(n.ip_config for n in topo.networks):
        return topo
    effective = state.topology_file(topo.name)
    previous = topology.load(str(effective)) if effective.exists() else None
    return ipam.assign(topo, previous)


def desire(topo: topology.Topology, host: HostState, adapt: render.Adaptation) -> Desired:
    from . import render

    lab = model.resolve(topo, host.facts_for(topo.name))  # resolve: final names, given what the host holds
    docs = render.render_all(lab, adapt)  # render: libvirt XML, as this host can run it
    return Desired(lab, adapt, docs)


def plan_up(desired: Desired, host: HostState) -> plan.Plan:
    return plan.plan(desired.lab, host, desired.docs, dhcp_digests(desired.lab))  # plan: the diff, ordered


def dhcp_digests(lab: model.Lab) -> dict[str, str]:
    """The digest of each node's DHCP server configuration (what a running one is compared with)."""
    from .host import dhcp

    return {server.node: dhcp.digest(dhcp.config(lab.name, server)) for server in lab.dhcp_servers}


# --------------------------------------------------------------------------- on the real host


class Host:
    """One connection to each real system, for commands that change the host or read more of it than
    observing does (observing is host/observe.py: forked readers)."""

    def __init__(self):
        from .host.netlink import Netlink
        from .host.ovs import Ovs
        from .host.virt import Virt

        self.ovs = Ovs()
        self.netlink = Netlink()
        try:
            self.virt = Virt()
        except LabkitError:
            self.ovs.close()
            raise

    def close(self) -> None:
        self.ovs.close()
        self.netlink.close()
        self.virt.close()


@contextlib.contextmanager
def host_session(phase=None):
    """A Host for the block; `phase` (Phases.phase) times the connecting."""
    with (phase or (lambda _name: contextlib.nullcontext()))("connect"):
        host = Host()
    try:
        yield host
    finally:
        host.close()


@dataclass(frozen=True)
class UpResult:
    desired: Desired
    plan: plan.Plan
    checks: object


def up(path: str | None, profile: str | None = None, *, strict: bool = False, say=print, phases=None,
       reading=None, max_oversubscription: float | None = None) -> UpResult:
    return up_topology(load(path, profile), path, strict=strict, say=say, phases=phases, reading=reading,  # parse + validate
                       max_oversubscription=max_oversubscription)


def up_topology(topo: topology.Topology, source: str | None, *, strict: bool = False, say=print,
                phases=None, reading=None, max_oversubscription: float | None = None) -> UpResult:
    """Bring the host to `topo` (read from `source`, None for the default lab). `reading`: the host
    being read since the command started (host/observe.py), used if still fresh."""
    from . import render
    from .host import preflight
    from .host.observe import observe
    from .timings import Phases

    phase = (phases or Phases()).phase
    max_oversubscription = max_oversubscription or preflight.MAX_OVERSUBSCRIPTION
    if images.needs_build():
        with phase("guest image"):
            images.build(say)                                             # the guest every domain boots
    with state.LabLock(topo.name, say):
        topo = with_addresses(topo)                                       # IPAM, against the lab's bindings
        with state.names_lock(say):
            with phase("observe"):
                observed = observe(topo.name, reading)                    # observe
            with phase("resolve, render, plan"):
                lab = model.resolve(topo, observed.facts_for(topo.name))  # resolve
                checks = preflight.run(lab, running=observed.running(topo.name),  # what this host can do
                                       other_vcpus=observed.other_vcpus(topo.name), max_oversubscription=max_oversubscription)
                preflight.enforce(checks, strict)
                desired = Desired(lab, checks.adaptation(), render.render_all(lab, checks.adaptation()))  # render
                todo = plan.plan(desired.lab, observed, desired.docs, dhcp_digests(lab))  # plan
            if todo.empty:
                say(str(todo))
            else:
                say("capacity: " + "; ".join(c.detail for c in checks.checks if c.name in ("memory", "cpus")))
                for a in todo.actions:
                    if a.detail.startswith("changed on the host"):
                        say(f"repairing {a.kind} {a.name}: {a.detail.removeprefix('changed on the host: ')}")
                say(f"lab {topo.name}: applying {len(todo.actions)} change(s)")
                from .apply import Applier

                with host_session(phase) as host:
                    Applier(host.ovs, host.netlink, host.virt, say, phase).apply(todo, desired.lab, desired.docs)  # apply
        state.save(topo.name, {"lab": topo.name, "source": source, "profile": topo.profile,
                               "deviations": [str(d) for d in desired.deviations]})
        state.save_topology(topo.name, topo)  # what status, verify, manage-ovs and a bare lab.up mean from now on
    return UpResult(desired, todo, checks)


def agents_answer(lab: model.Lab, timeout: float = 5.0) -> list[str]:
    """The lab's domains whose agent does not answer `hello` within `timeout` (none: all alive)."""
    from .host import verifier

    return verifier.wait_for_guests(lab.running(), timeout, say=lambda _message: None)


def down(lab_name: str, say=print, phases=None) -> plan.Plan:
    """Remove everything the host marks as `lab_name`'s; needs no topology file."""
    from .apply import Applier
    from .host.observe import observe
    from .timings import Phases

    phase = (phases or Phases()).phase
    # No forked readers: removing needs the adapters here anyway, so they read the host too.
    with state.LabLock(lab_name, say), host_session(phase) as host:
        with phase("observe"):
            observed = observe(lab_name, host=host)                       # observe
            todo = plan.plan_down(lab_name, observed)                     # plan
        if todo.empty:
            say(f"lab {lab_name}: nothing of it is on this host")
        else:
            say(f"lab {lab_name}: removing {len(todo.actions)} object(s)")
            Applier(host.ovs, host.netlink, host.virt, say, phase).apply(todo, None, {})  # apply
        with phase("forget"):
            state.forget(lab_name)
    return todo


def _look(path: str | None, profile: str | None = None, reading=None):
    """Observe, resolve, render and plan without changing anything (for plan, status, verify)."""
    from . import render
    from .host import preflight
    from .host.observe import observe

    topo = with_addresses(load(path, profile))                            # parse + validate, IPAM
    observed = observe(topo.name, reading)                                # observe
    lab = model.resolve(topo, observed.facts_for(topo.name))              # resolve
    adapt = preflight.run(lab, probe_kvm=False).adaptation()
    desired = Desired(lab, adapt, render.render_all(lab, adapt))          # render
    pending = plan.plan(lab, observed, desired.docs, dhcp_digests(lab))   # plan (not applied)
    return desired, observed, pending


def _resolved(path: str | None, reading=None) -> model.Lab:
    """The lab as it stands on this host (load, observe, resolve): what commands that only look at
    its objects need, without rendering or planning."""
    from .host.observe import observe

    topo = with_addresses(load(path))                                     # parse + validate, IPAM
    return model.resolve(topo, observe(topo.name, reading).facts_for(topo.name))  # observe, resolve


def diagram(path: str | None, reading=None) -> str:
    """lab.diagram: the lab's graph (DOT), with the names used on the host and its down links."""
    from . import diagram as diagram_mod, topology
    from .host.observe import observe

    topo = with_addresses(load(path))
    host = observe(topo.name, reading)
    lab = model.resolve(topo, host.facts_for(topo.name))
    down = frozenset(link.name for link in host.links if link.netns is None and link.lab == lab.name and not link.up)
    return diagram_mod.dot(lab, down)


def labs_on_host(reading=None) -> list:
    """lab.list: every lab with marks on this host or a saved topology, resolved against one reading."""
    from . import labs, topology
    from .host.observe import observe

    host = observe(None, reading)
    resolved = {}
    for effective in sorted(paths.RUN_DIR.glob("*/topology.yaml")):
        topo = with_addresses(topology.load(str(effective)))
        resolved[topo.name] = model.resolve(topo, host.facts_for(topo.name))
    return labs.summarize(host, resolved)


def status_plan(path: str | None, profile: str | None = None, reading=None) -> tuple[plan.Plan, str]:
    """lab.plan: the changes lab.up would make, and the capacity it would check them against."""
    from .host import preflight

    desired, observed, pending = _look(path, profile, reading)
    checks = [preflight.check_memory(desired.lab, observed.running(desired.lab.name)),
              preflight.check_cpus(desired.lab, observed.other_vcpus(desired.lab.name))]
    return pending, "capacity: " + "; ".join(f"{c.detail}" + (f" ({c.status})" if c.status != "pass" else "")
                                            for c in checks)


def status(path: str | None, profile: str | None = None, reading=None):
    from . import status as status_mod
    from .host.ovs import Ovs

    desired, _, pending = _look(path, profile, reading)
    with Ovs() as ovs:
        vm_ports, bonds = ovs.vm_ports(), ovs.bond_problems()
    return status_mod.build(desired.lab, pending, vm_ports, [str(d) for d in desired.deviations], bonds)


@dataclass(frozen=True)
class Verification:
    lab: model.Lab
    outcomes: list  # verify.Outcome: the reach/blocked matrix
    dhcp: list  # dhcpcheck.DhcpOutcome: managed networks' DHCP
    late: list[str]  # domains whose agent never answered: named, their checks failed

    @property
    def failed(self) -> list:
        return [o for o in self.outcomes if not o.ok]

    @property
    def dhcp_failed(self) -> list:
        return [o for o in self.dhcp if not o.ok]


def verify(path: str | None, timeout: float, say=print, reading=None) -> Verification:
    """Wait for every guest, then check the lab's network from inside the guests and namespaces."""
    return verify_lab(_resolved(path, reading), timeout, say)


def verify_lab(lab: model.Lab, timeout: float, say=print, phase=None) -> Verification:
    """verify, for a lab already resolved (lab.up's): agents are sockets, no host session needed."""
    from .host import verifier

    phase = phase or (lambda _name: contextlib.nullcontext())
    lab = lab.running()  # VMs powered off are neither waited for nor probed
    say(f"waiting for {len(lab.domains)} guest(s) to boot (up to {timeout:.0f} s)")
    with phase("guests boot"):
        late = verifier.wait_for_guests(lab, timeout, say)
    say("checking the network from inside the guests")
    with phase("probes"):
        outcomes, dhcp = verifier.run(lab, late)
        return Verification(lab, outcomes, dhcp, late)


def manage_ovs_update(path: str | None, node: str | None, request, say=print) -> UpResult:
    """manage_ovs update_uplinks: edit the effective topology, check it, converge the lab to it."""
    from . import manage_ovs, topology
    from .yamlpos import dotted

    topo = load(path)
    node = node or topo.nodes[0].name
    changed = manage_ovs.update_uplinks(topo, node, request)
    problems = topology.crosscheck(changed)
    if problems:
        raise LabkitError("update_uplinks would make the lab invalid: "
                          + "; ".join(f"{dotted(p)}: {m}" for p, m in problems))
    return up_topology(changed, path, say=say)


@contextlib.contextmanager
def controlled(lab_name: str):
    """The lab's control plane (control.Control) for one acli command, under the lab's lock: the
    command reads, changes and applies without another command in between."""
    from . import control, topology

    with state.LabLock(lab_name, lambda _message: None):
        effective = state.topology_file(lab_name)
        if not effective.exists():
            raise HostError(f"lab {lab_name} is not up; bring it up first (invoke lab.up)")
        yield control.Control(topology.load(str(effective)), state.load(lab_name, "control.json"))


def apply_change(change, say=print) -> UpResult:
    """Apply a control-plane change (inside `controlled`) the way lab.up applies a topology, and count
    it in the objects' logical timestamps."""
    lab_name = change.topo.name
    result = up_topology(change.topo, state.load(lab_name).get("source"), say=say)
    stamps = state.load(lab_name, "control.json")
    for key in change.touched:
        stamps[key] = stamps.get(key, 0) + 1
    for key in change.deleted:
        stamps.pop(key, None)
    state.save(lab_name, stamps, "control.json")
    return result


def manage_ovs_show(path: str | None, node: str | None, action: str) -> str:
    from . import manage_ovs

    topo = load(path)
    node = node or topo.nodes[0].name
    if node not in {n.name for n in topo.nodes}:
        raise LabkitError(f"lab {topo.name} has no node {node!r}; its nodes: {', '.join(n.name for n in topo.nodes)}")
    lab = _resolved(path)
    with host_session() as host:
        if action == "show_uplinks":
            return manage_ovs.format_uplinks(host.ovs.bonds(lab.name, node))
        speeds = next(n for n in topo.nodes if n.name == node).uplinks
        uplinks = lab.uplinks(node)
        return manage_ovs.format_interfaces([(name, speed, host.netlink.carrier(uplinks[name].peer))
                                             for name, speed in speeds.items()])


def set_link(path: str | None, node: str, iface: str, up: bool, side: str = "node") -> str:
    """Take a lab link down or up: a node's uplink (its NIC end, or with side=tor the top-of-rack
    port facing it); with node=tor (or tor-b, the second switch of a pair) a switch port by name, or
    `all` of them: the whole switch fails. Returns what was changed."""
    from .host.netlink import Netlink

    links = _link_targets(_resolved(path), node, iface, side)
    with Netlink() as netlink:
        for link in links:
            netlink.set_link_state(link, up)
    state.bump_generation()
    return ", ".join(links)


def _link_targets(lab: model.Lab, node: str, iface: str, side: str) -> list[str]:
    """The root-namespace interfaces that carry a node's uplink (either end) or a switch's ports."""
    if side not in ("node", "tor"):
        raise LabkitError(f"--side {side} is not valid; use node (the node's NIC) or tor (the switch port facing it)")
    switches = {b.ahv_name: b for b in lab.bridges if b.role == "tor"}
    if node in switches:
        ports = [i.name for p in switches[node].ports for i in p.interfaces]
        if iface == "all":  # the switch fails: every port, its gateways' and the inter-switch link's included
            return ports
        if node == "tor":  # any switch's port by name (port names are unique)
            ports = [i.name for b in switches.values() for p in b.ports for i in p.interfaces]
        if iface not in ports:
            raise LabkitError(f"switch {node} of lab {lab.name} has no port {iface!r}; its ports: {', '.join(ports)} (or all)")
        return [iface]
    uplinks = lab.uplinks(node)
    if not uplinks:
        raise LabkitError(f"lab {lab.name} has no node {node!r}; its nodes: {', '.join(lab.node_names)} "
                          f"(or the switches {', '.join(switches)})")
    veth = uplinks.get(iface)
    if veth is None:
        raise LabkitError(f"node {node} has no uplink {iface!r}; its uplinks: {', '.join(uplinks)}")
    return [veth.peer if side == "node" else veth.name]


def find_domain(path: str | None, vm: str, reading=None) -> model.Domain:
    """A domain of the lab by its domain name, its topology VM name, or `cvm` (the first node's CVM)."""
    lab = _resolved(path, reading)
    for dom in lab.domains:
        if vm in (dom.name, dom.hostname) or (vm == "cvm" and dom.role == "cvm"):
            return dom
    raise LabkitError(f"lab {lab.name} has no VM {vm!r}; its VMs: {', '.join(d.name for d in lab.domains)} (or cvm)")


def lab_name(path: str | None, lab: str | None) -> str:
    """The lab a command means: --lab, else the topology file's, else the embedded default's."""
    if path:
        return load(path).name
    name = lab or default_lab_name()
    if not names.is_lab_name(name):
        raise LabkitError(f"{name!r} is not a lab name; lab names are 1-12 of a-z, 0-9 and '-'")
    return name


def default_lab_name() -> str:
    """The embedded default's name, read without validating the whole file (it is labkit's own)."""
    import yaml

    return yaml.load((paths.PACKAGE / "default.yaml").read_text(), Loader=yaml.CSafeLoader)["name"]


def target(path: str | None, lab: str | None) -> tuple[str | None, str]:
    """(topology file, lab name) a command means: --topology; else the lab's effective topology
    (what its last lab.up or manage-ovs built, kept under /run/labkit/<lab>/); else the default lab."""
    name = lab_name(path, lab)
    if path:
        return path, name
    effective = state.topology_file(name)
    if effective.exists():
        return str(effective), name
    if lab and lab != default_lab_name():
        raise HostError(f"lab {lab} has no state under {state.lab_dir(lab)}; give --topology FILE")
    return None, name
