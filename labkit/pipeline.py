"""labkit's pipeline. lab.up runs, one call a line (_converge):

    load (parse + validate) -> observe -> IPAM -> resolve -> preflight (what the host allows)
    -> render -> plan -> apply -> [verify]

where load, IPAM, resolve and render are skipped for a lab decided before from the same file,
labkit and host facts (memo.py): observe, preflight and plan always run.

`desire` and `plan_up` are the pure half (tests call them with recorded host states); `look`
runs the same stages without applying (status, plan); `down` observes, plans the deletes and
applies them. What the tasks do around these is commands.py. `topology` (pydantic) and `render`
(jinja2, lxml) are imported by the functions that use them: lab.down needs neither.
"""

from __future__ import annotations

import contextlib
import threading
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
    observing does (observing is host/observe.py: forked readers). Each is opened in a thread of its
    own, since importing its library is most of the cost: libvirt's can be in use (a domain being
    destroyed releases the interpreter) while pyroute2 and ovsdbapp are still being imported."""

    def __init__(self):
        self._opening = [_Opening("labkit.host.virt", "Virt"), _Opening("labkit.host.ovs", "Ovs"),
                         _Opening("labkit.host.netlink", "Netlink")]
        self.virt, self.ovs, self.netlink = self._opening

    def close(self) -> None:
        for opening in self._opening:
            opening.close()


class _Opening:
    """An adapter being opened in a background thread; used as the adapter, it waits for it first."""

    def __init__(self, module: str, cls: str):
        self._adapter, self._error = None, None
        self._thread = threading.Thread(target=self._open, args=(module, cls), daemon=True)
        self._thread.start()

    def _open(self, module: str, cls: str) -> None:
        import importlib

        try:
            self._adapter = getattr(importlib.import_module(module), cls)()
        except BaseException as exc:  # noqa: BLE001 - raised where the adapter is first used
            self._error = exc

    def adapter(self):
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._adapter

    def __getattr__(self, attr: str):
        return getattr(self.adapter(), attr)

    def close(self) -> None:
        self._thread.join()
        if self._adapter is not None:
            self._adapter.close()


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
    """lab.up of a topology file: decided again only if the file, labkit or the host changed (memo.py)."""
    from . import memo

    wanted = memo.recall(path, profile) or load(path, profile)            # parse + validate
    return _converge(wanted, path, profile, strict=strict, say=say, phases=phases, reading=reading,
                     max_oversubscription=max_oversubscription)


def up_topology(topo: topology.Topology, source: str | None, *, strict: bool = False, say=print,
                phases=None, reading=None, max_oversubscription: float | None = None) -> UpResult:
    """Bring the host to `topo`, a topology not (or no longer) the file `source` says (acli,
    manage-ovs): `source` is only recorded."""
    return _converge(topo, source, None, strict=strict, say=say, phases=phases, reading=reading,
                     max_oversubscription=max_oversubscription, from_file=False)


def _name(wanted) -> str:
    from . import memo

    return wanted.desired.lab.name if isinstance(wanted, memo.Remembered) else wanted.name


def _resolve(wanted, source: str | None, profile: str | None, facts: model.HostFacts):
    """(lab, topology) for this host's `facts`: a remembered lab as it is, if resolved from these
    very facts (topology None: not loaded); else the topology (loaded from `source` if need be),
    with its addresses, resolved now."""
    from . import memo

    if isinstance(wanted, memo.Remembered):
        if wanted.facts == facts:
            return wanted.desired.lab, None
        wanted = load(source, profile)
    topo = with_addresses(wanted)
    return model.resolve(topo, facts), topo


def _rendered(wanted, lab: model.Lab, adapt: render.Adaptation) -> Desired:
    """`lab` rendered for a host that needs `adapt`: a remembered decision's documents, where they
    were rendered for that very lab and adaptation."""
    from . import memo

    if isinstance(wanted, memo.Remembered) and wanted.desired.lab is lab and wanted.desired.adapt == adapt:
        return wanted.desired
    return rendered(lab, adapt)


def _converge(wanted, source: str | None, profile: str | None, *, strict: bool, say, phases, reading,
              max_oversubscription: float | None, from_file: bool = True) -> UpResult:
    """Bring the host to `wanted`: a topology.Topology, or a memo.Remembered decision (used as it
    is if the host facts it was decided from still hold, else the file is loaded and decided
    again). `reading`: the host being read since the command started (host/observe.py)."""
    from . import memo
    from .features import preflight
    from .host.observe import observe
    from .timings import Phases

    phase = (phases or Phases()).phase
    name = _name(wanted)
    max_oversubscription = max_oversubscription or preflight.MAX_OVERSUBSCRIPTION
    if images.needs_build():
        with phase("guest image"):
            images.build(say)                                             # the guest every domain boots
    with state.LabLock(name, say):
        with state.names_lock(say):
            with phase("observe"):
                observed = observe(name, reading)                         # observe
            with phase("resolve, render, plan"):
                facts = observed.facts_for(name)
                lab, topo = _resolve(wanted, source, profile, facts)      # IPAM, resolve
                checks = preflight.run(lab, running=observed.running(name),  # what this host can do
                                       other_vcpus=observed.other_vcpus(name), max_oversubscription=max_oversubscription)
                preflight.enforce(checks, strict)
                desired = _rendered(wanted, lab, checks.adaptation())     # render
                todo = plan_up(desired, observed)                         # plan
            if todo.empty:
                say(str(todo))
            else:
                say(preflight.capacity_line(checks.checks))
                for a in todo.actions:
                    if a.detail.startswith("changed on the host"):
                        say(f"repairing {a.kind} {a.name}: {a.detail.removeprefix('changed on the host: ')}")
                say(f"lab {name}: applying {len(todo.actions)} change(s)")
                from .apply import Applier

                with host_session(phase) as host:
                    Applier(host.ovs, host.netlink, host.virt, say, phase).apply(todo, desired.lab)  # apply
        record = {"lab": name, "source": source, "profile": lab.profile,
                  "deviations": [str(d) for d in desired.deviations]}
        state.save(name, record)
        if topo is not None:
            state.save_topology(name, topo)  # what status, verify, manage-ovs and a bare lab.up mean from now on
        if from_file and (topo is not None or desired is not wanted.desired):
            memo.remember(source, profile, facts, desired)
    return UpResult(desired, todo, checks)


def down(lab_name: str, say=print, phases=None, reading=None) -> plan.Plan:
    """Remove everything the host marks as `lab_name`'s; needs no topology file. `reading`: the
    host being read since the command started (host/observe.py); if still fresh, the lab's domains
    are destroyed as soon as libvirt is read (libvirt waits 200 ms for each QEMU to exit), while
    the rest of the host is still being read."""
    from .apply import Applier
    from .host.observe import observe
    from .timings import Phases

    phase = (phases or Phases()).phase
    with state.LabLock(lab_name, say), host_session(phase) as host:
        applier = Applier(host.ovs, host.netlink, host.virt, say, phase)
        first = plan.Plan(lab_name, ())
        if reading is not None and reading.fresh():
            with phase("observe libvirt"):
                first = plan.plan_down(lab_name, HostState(domains=reading.part("libvirt")[1]))  # domains only
            if not first.empty:
                say(f"lab {lab_name}: removing {len(first.actions)} domain(s) while reading the rest of the host")
                applier.apply(first, None)                                # apply, the domains
            with phase("observe"):
                observed = reading.result().adopt(lab_name, state.intents(lab_name))  # read before: less those
        else:
            with phase("observe"):
                observed = observe(lab_name, host=host)                   # observe
        rest = plan.plan_down(lab_name, observed).without(first)          # plan
        if first.empty and rest.empty:
            say(f"lab {lab_name}: nothing of it is on this host")
        elif not rest.empty:
            say(f"lab {lab_name}: removing {len(rest.actions)} object(s)")
            applier.apply(rest, None)                                     # apply
        with phase("forget"):
            state.forget(lab_name)
    return plan.Plan(lab_name, first.actions + rest.actions)


@dataclass(frozen=True)
class Look:
    """A lab as lab.up would see it now, nothing applied: for status and plan."""

    desired: Desired
    observed: HostState
    pending: plan.Plan
    checks: object  # preflight.Report: what the host allows, the capacity included


def look(path: str | None, profile: str | None = None, reading=None) -> Look:
    """Load, observe, resolve, render and plan without changing anything."""
    from . import memo
    from .features import preflight
    from .host.observe import observe

    wanted = memo.recall(path, profile) or load(path, profile)            # parse + validate
    name = _name(wanted)
    observed = observe(name, reading)                                     # observe
    lab, _ = _resolve(wanted, path, profile, observed.facts_for(name))    # IPAM, resolve
    checks = preflight.run(lab, probe_kvm=False, running=observed.running(name),
                           other_vcpus=observed.other_vcpus(name))
    desired = _rendered(wanted, lab, checks.adaptation())                 # render
    return Look(desired, observed, plan_up(desired, observed), checks)    # plan (not applied)


def resolved(path: str | None, reading=None) -> model.Lab:
    """The lab as it stands on this host (load, observe, resolve): what commands that only look at
    its objects need, without rendering or planning (remembered, where lab.up decided it from the
    same file and the host facts hold)."""
    return resolved_on(path, reading)[0]


def resolved_on(path: str | None, reading=None) -> tuple[model.Lab, HostState]:
    """resolved(), and the host it was resolved on."""
    from . import memo
    from .host.observe import observe

    wanted = memo.recall(path, None) or load(path)                        # parse + validate
    name = _name(wanted)
    observed = observe(name, reading)                                     # observe
    return _resolve(wanted, path, None, observed.facts_for(name))[0], observed  # IPAM, resolve


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
    from .features import verifier

    phase = phase or (lambda _name: contextlib.nullcontext())
    lab = lab.running()  # VMs powered off are neither waited for nor probed
    say(f"waiting for {len(lab.domains)} guest(s) to boot (up to {timeout:.0f} s)")
    with phase("guests boot"):
        late = verifier.wait_for_guests(lab, timeout, say)
    say("checking the network from inside the guests")
    with phase("probes"):
        outcomes, dhcp = verifier.run(lab, late)
        return Verification(lab, outcomes, dhcp, late)


