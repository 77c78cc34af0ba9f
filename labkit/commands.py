"""What the tasks do besides the pipeline: look at a lab (status, plan, verify, diagram, lab.list),
change one link or bond (lab.link-*, manage-ovs), drive its control plane (acli), and find which
lab and file a command means. Each is a few lines over pipeline.py's stages and the adapters."""

from __future__ import annotations

import contextlib

from . import model, names, paths, plan, state
from .errors import HostError, LabkitError
from .pipeline import UpResult, Verification, addressed, host_session, load, look, resolved, resolved_on, up_topology, verify_lab


def agents_answer(lab: model.Lab, timeout: float = 5.0) -> list[str]:
    """The lab's domains whose agent does not answer `hello` within `timeout` (none: all alive)."""
    from .features import verifier

    return verifier.wait_for_guests(lab.running(), timeout, say=lambda _message: None)


def diagram(path: str | None, reading=None) -> str:
    """lab.diagram: the lab's graph (DOT), with the names used on the host and its down links."""
    from . import diagram as diagram_mod

    from .impairing import listed_on

    lab, host = resolved_on(path, reading)
    down = frozenset(link.name for link in host.links if link.netns is None and link.lab == lab.name and not link.up)
    return diagram_mod.dot(lab, down, {ifname: str(imp) for _, ifname, imp in listed_on(lab, host)})


def labs_on_host(reading=None) -> list:
    """lab.list: every lab with marks on this host or a saved topology, resolved against one reading."""
    from . import labs, topology
    from .host.observe import observe

    host = observe(None, reading)
    resolved, unreadable = {}, {}
    for folder in sorted(p for p in paths.RUN_DIR.iterdir() if p.is_dir()) if paths.RUN_DIR.is_dir() else ():
        effective = state.read_effective(folder.name)
        if effective is None:
            continue
        try:  # one lab saved by another labkit version must not hide the others
            topo = topology.load_bytes(effective.topology, state.topology_file(folder.name))
            resolved[topo.name] = model.resolve(addressed(topo, effective).assigned.topo, host.facts_for(topo.name))
        except LabkitError as error:
            unreadable[folder.name] = f"its saved topology does not load ({error})"
    return labs.summarize(host, resolved, unreadable)


def status_plan(path: str | None, profile: str | None = None, reading=None) -> tuple[plan.Plan, str]:
    """lab.plan: the changes lab.up would make, and the capacity it would check them against."""
    from .features import preflight

    seen = look(path, profile, reading)
    return seen.pending, preflight.capacity_line(seen.checks.checks)


def status(path: str | None, profile: str | None = None, reading=None):
    from . import status as status_mod

    seen = look(path, profile, reading)
    desired, bridges = seen.desired, seen.observed.bridges
    vm_ports = {v.iface_id: (v.name, v.tag, v.problem) for b in bridges for v in b.vm_ports}
    return status_mod.build(desired.lab, seen.pending, vm_ports, [str(d) for d in desired.deviations],
                            _bond_problems(seen.observed))


def _bond_problems(observed) -> dict[str, list[str]]:
    """Bond port -> what keeps each of its members idle (link down, LACP not negotiated), as OVS says."""
    return {port: list(problems) for b in observed.bridges for port, problems in b.bond_problems}


def verify(path: str | None, timeout: float, say=print, reading=None) -> Verification:
    """Wait for every guest, then check the lab's network from inside the guests and namespaces."""
    return verify_lab(resolved(path, reading), timeout, say)


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
    with state.LabLock(lab_name, lambda _message: None):
        yield control_of(lab_name)


def control_of(lab_name: str):
    """The lab's control plane as its effective state stands (read whole, no lock needed)."""
    import json

    from . import control, ledger, topology

    effective = state.read_effective(lab_name)
    if effective is None:
        raise HostError(f"lab {lab_name} is not up; bring it up first (invoke lab.up)")
    return control.Control(topology.load_bytes(effective.topology, state.topology_file(lab_name)),
                           ledger.Ledger.from_json(effective.ledger), json.loads(effective.stamps))


def export(lab_name: str) -> str:
    """lab.export: the effective topology with every NIC's MAC and every IPAM binding written out
    (as requested addresses), so that lab.up --topology brings the same lab up again."""
    from . import topology

    effective = state.read_effective(lab_name)
    if effective is None:
        raise LabkitError(f"lab {lab_name} is not up on this host (no {state.topology_file(lab_name)}); bring it up first")
    topo = topology.load_bytes(effective.topology, state.topology_file(lab_name))
    return state.topology_yaml(lab_name, addressed(topo, effective).assigned.topo)


def apply_change(change, say=print, task=None, user: str = "", client: str = "acli"):
    """Apply a control-plane change (inside `controlled`) the way lab.up applies a topology, as a
    task of the lab's (tasklog: RUNNING, then SUCCEEDED with the entities it touched, or FAILED and
    the error raised); the records it altered count one more in their logical timestamps
    (pipeline.save_effective). Returns the finished task."""
    from . import tasklog

    lab = change.topo.name
    task = tasklog.running(lab, task or tasklog.new(change.operation, user=user, client=client))
    try:
        up_topology(change.topo, state.load(lab).get("source"), say=say)
    except LabkitError as exc:
        tasklog.finished(lab, task, error=str(exc))
        raise
    return tasklog.finished(lab, task, entities=entities(change))


def act(lab_name: str, verb: str, vms, operation: str, user: str = "", client: str = "acli") -> list[str]:
    """A power action (features/power.BY_VERB) on the lab's VMs, each a task; returns what it said
    (a guest that did not shut down in time)."""
    from . import tasklog
    from .features import power

    said = []
    for vm in vms:
        dom = find_domain(str(state.topology_file(lab_name)), vm)
        entity = (tasklog.Entity(dom.uuid, "vmm:ahv:config:vm", vm),)
        task = tasklog.running(lab_name, tasklog.new(operation, entity, user=user, client=client))
        try:
            message = power.BY_VERB[verb](dom)
        except LabkitError as exc:
            tasklog.finished(lab_name, task, error=str(exc))
            raise
        tasklog.finished(lab_name, task)
        if message:
            said.append(message)
    return said


def entities(change) -> tuple:
    """The task entities of a change: what it made, changed or deleted, by UUID and v4 kind."""
    from . import control, tasklog

    lab, out = change.topo.name, []
    for key in (*change.touched, *change.deleted):
        kind, _, name = key.partition(":")
        if kind == "vm":
            out.append(tasklog.Entity(change.vm_uuid(name), "vmm:ahv:config:vm", name))
        elif kind == "net":
            out.append(tasklog.Entity(control.network_uuid(lab, name), "networking:config:subnet", name))
        elif kind == "nic":
            vm, _, mac = name.partition(":")
            out.append(tasklog.Entity(control.nic_uuid(lab, mac), "vmm:ahv:config:vm:nic", mac))
        elif kind == "host":
            out.append(tasklog.Entity(names.uuid_for(lab, "host", name), "clustermgmt:config:host", name))
        elif kind == "image":  # by UUID: a deleted image is not in the new topology
            out.append(tasklog.Entity(name, "vmm:content:image", name))
    return tuple(out)


def manage_ovs_show(path: str | None, node: str | None, action: str) -> str:
    from . import manage_ovs

    topo = load(path)
    node = node or topo.nodes[0].name
    if node not in {n.name for n in topo.nodes}:
        raise LabkitError(f"lab {topo.name} has no node {node!r}; its nodes: {', '.join(n.name for n in topo.nodes)}")
    lab = resolved(path)
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

    links = _link_targets(resolved(path), node, iface, side)
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
    lab = resolved(path, reading)
    for dom in lab.domains:
        if vm in (dom.name, dom.hostname, dom.ahv_name) or (vm == "cvm" and dom.role == "cvm"):
            return dom
    raise LabkitError(f"lab {lab.name} has no VM {vm!r}; its VMs: {', '.join(d.name for d in lab.domains)} (or cvm)")


def up_source(path: str | None) -> str | None:
    """The file a lab.up means, as target() says, without reading it (lab.up may not need to)."""
    return path or _effective(default_lab_name())


def _effective(lab: str) -> str | None:
    effective = state.topology_file(lab)
    return str(effective) if effective.exists() else None


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
    if effective := _effective(name):
        return effective, name
    if lab and lab != default_lab_name():
        raise HostError(f"lab {lab} has no state under {state.lab_dir(lab)}; give --topology FILE")
    return None, name


def faults(lab_name: str) -> list:
    from .breaking import Fault

    return [Fault(**f) for f in state.load(lab_name, state.FAULTS).get("faults", [])]


def break_lab(path: str | None, lab_name: str, scenario_name: str, seed: int, say=print):
    """Apply a scenario of the catalogue (breaking.py) through plan and apply: only the changes it
    makes (other drift, earlier faults included, is left as it is; but an OVS bridge is converged
    whole, so a second fault on the same bridge repairs the first's). The lab's design stays as it
    was, so lab.status shows the drift and lab.up repairs it. Returns the Fault (kept for
    `lab.break --answers`)."""
    from . import breaking
    from .apply import Applier
    from .pipeline import dhcp_digests, relay_version

    scenario = breaking.scenario(scenario_name)
    with state.LabLock(lab_name, say):
        seen = look(path)
        if seen.desired.lab.name != lab_name:
            raise LabkitError(f"the topology is lab {seen.desired.lab.name}'s, not {lab_name}'s")
        missing = [a for a in seen.pending.actions if a.verb in ("create", "start")]
        if state.read_effective(lab_name) is None or missing:
            raise LabkitError(f"lab {lab_name} is not up as designed ({len(missing)} object(s) missing or stopped: "
                              f"lab.status shows them); bring it up first (invoke lab.up)")
        after, fault = breaking.broken(scenario, seen.desired.lab, seen.observed, seed)

        todo = plan.plan(after, seen.observed, seen.desired.docs, dhcp_digests(after), relay_version()).without(
            seen.pending)  # what the design's own plan would not do: the fault's changes alone
        if todo.empty:
            raise LabkitError(f"scenario {scenario_name} changes nothing in lab {lab_name}: it is broken that way already")
        with state.names_lock(say), host_session() as host:
            Applier(host.ovs, host.netlink, host.virt, lambda _line: None).apply(todo, after)
        state.save(lab_name, {"faults": [f.__dict__ for f in faults(lab_name)] + [fault.__dict__]}, state.FAULTS)
    return fault


def check(path: str | None, timeout: float, say=print, reading=None) -> tuple[str, bool]:
    """lab.check's table, and whether nothing is broken."""
    from . import checking

    seen = look(path, reading=reading)
    verification = verify_lab(seen.desired.lab, timeout, say, settled_tries=0)
    found = checking.findings(seen.desired.lab, seen.pending, _bond_problems(seen.observed), verification)
    checked = len(verification.outcomes) + len(verification.dhcp)
    return checking.table(seen.desired.lab.name, found, checked), not found
