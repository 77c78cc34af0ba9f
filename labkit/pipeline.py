"""labkit's pipeline. lab.up runs, one call a line (up_topology):

    load (parse + validate) -> IPAM -> observe -> resolve -> preflight (what the host allows)
    -> render -> plan -> apply -> [verify]

`desire` and `plan_up` are the pure half (tests call them with recorded host states); `look`
runs the same stages without applying (status, plan); `down` observes, plans the deletes and
applies them. What the tasks do around these is commands.py. `topology` (pydantic) and `render`
(jinja2, lxml) are imported by the functions that use them: lab.down needs neither.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from typing import TYPE_CHECKING

from . import images, model, plan, state
from .errors import LabkitError
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
    return rendered(model.resolve(topo, host.facts_for(topo.name)), adapt)  # resolve: final names, given the host


def rendered(lab: model.Lab, adapt: render.Adaptation) -> Desired:
    from . import render

    return Desired(lab, adapt, render.render_all(lab, adapt))  # render: libvirt XML, as this host can run it


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
                desired = rendered(lab, checks.adaptation())              # render
                todo = plan_up(desired, observed)                         # plan
            if todo.empty:
                say(str(todo))
            else:
                say(preflight.capacity_line(checks.checks))
                for a in todo.actions:
                    if a.detail.startswith("changed on the host"):
                        say(f"repairing {a.kind} {a.name}: {a.detail.removeprefix('changed on the host: ')}")
                say(f"lab {topo.name}: applying {len(todo.actions)} change(s)")
                from .apply import Applier

                with host_session(phase) as host:
                    Applier(host.ovs, host.netlink, host.virt, say, phase).apply(todo, desired.lab)  # apply
        state.save(topo.name, {"lab": topo.name, "source": source, "profile": topo.profile,
                               "deviations": [str(d) for d in desired.deviations]})
        state.save_topology(topo.name, topo)  # what status, verify, manage-ovs and a bare lab.up mean from now on
    return UpResult(desired, todo, checks)


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
            Applier(host.ovs, host.netlink, host.virt, say, phase).apply(todo, None)  # apply
        with phase("forget"):
            state.forget(lab_name)
    return todo


@dataclass(frozen=True)
class Look:
    """A lab as lab.up would see it now, nothing applied: for status and plan."""

    desired: Desired
    observed: HostState
    pending: plan.Plan
    checks: object  # preflight.Report: what the host allows, the capacity included


def look(path: str | None, profile: str | None = None, reading=None) -> Look:
    """Load, observe, resolve, render and plan without changing anything."""
    from .host import preflight
    from .host.observe import observe

    topo = with_addresses(load(path, profile))                            # parse + validate, IPAM
    observed = observe(topo.name, reading)                                # observe
    lab = model.resolve(topo, observed.facts_for(topo.name))              # resolve
    checks = preflight.run(lab, probe_kvm=False, running=observed.running(topo.name),
                           other_vcpus=observed.other_vcpus(topo.name))
    desired = rendered(lab, checks.adaptation())                          # render
    return Look(desired, observed, plan_up(desired, observed), checks)    # plan (not applied)


def resolved(path: str | None, reading=None) -> model.Lab:
    """The lab as it stands on this host (load, observe, resolve): what commands that only look at
    its objects need, without rendering or planning."""
    from .host.observe import observe

    topo = with_addresses(load(path))                                     # parse + validate, IPAM
    return model.resolve(topo, observe(topo.name, reading).facts_for(topo.name))  # observe, resolve


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


