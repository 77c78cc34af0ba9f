"""labkit's pipeline. lab.up runs, one call a line (_converge):

    read inputs (under the lab's lock) -> load (parse + validate) -> observe -> IPAM -> resolve
    -> preflight (what the host allows) -> render -> plan -> apply -> save the effective state
    -> [verify]

where load, IPAM, resolve and render are skipped for a lab decided before from the same inputs
and host facts (memo.py): observe, preflight and plan always run.

`desire` and `plan_up` are the pure half (tests call them with recorded host states); `look`
runs the same stages without applying (status, plan); `down` observes, plans the deletes and
applies them. What the tasks do around these is commands.py. `topology` (pydantic) and `render`
(jinja2, lxml) are imported by the functions that use them: lab.down needs neither.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from dataclasses import dataclass, replace

from typing import TYPE_CHECKING

from . import images, model, plan, state
from .desired import Desired
from .errors import LabkitError, TopologyError, Problem
from .hoststate import HostState

if TYPE_CHECKING:
    from . import ledger, memo, render, topology

__all__ = ["Desired"]


def load(path: str | None, profile: str | None = None) -> topology.Topology:
    from . import topology

    topo = topology.load(path)  # parse + validate (raises TopologyError with every problem)
    return with_profile(topo, profile)


def with_profile(topo: topology.Topology, profile: str | None) -> topology.Topology:
    if profile is not None and profile not in ("lab", "fidelity"):  # model_copy would not validate it
        raise LabkitError(f"--profile {profile} is not a profile; use lab or fidelity")
    return topo.model_copy(update={"profile": profile}) if profile else topo


def parse_inputs(inputs: memo.Inputs) -> topology.Topology:
    """The topology from exactly the bytes the inputs hold (never the file read again)."""
    from . import topology

    return with_profile(topology.load_bytes(inputs.text, inputs.source), inputs.profile)


@contextlib.contextmanager
def wanted_from(path: str | None, profile: str | None = None, *, lock: bool = False, say=print):
    """(inputs, wanted) for the lab `path` describes, for the block: the inputs read once (under
    the lab's lock, held for the block, with `lock`), and the decision remembered from those
    inputs (memo.Remembered) or the topology parsed from them."""
    from . import memo

    text = _source_bytes(path)
    name = memo.lab_name_in(text) or parse_inputs(memo.Inputs("-", path, text, None, None, "")).name
    for _ in range(3):  # a file whose `name:` line is not its lab's name: read again for that lab
        with state.LabLock(name, say) if lock else contextlib.nullcontext():
            inputs = memo.read(name, path, profile)
            wanted = memo.recall(inputs) or parse_inputs(inputs)
            if _name(wanted) == name:
                yield inputs, wanted
                return
            name = _name(wanted)
    raise LabkitError(f"{path}: the lab's name changed while it was being read; run the command again")


def _source_bytes(path: str | None) -> bytes:
    from . import memo

    try:
        return memo.source_bytes(path)
    except OSError as exc:
        raise TopologyError([Problem(str(path), 0, "", f"cannot be read ({exc.strerror}); give an existing topology file")]) from None


@dataclass(frozen=True)
class Addressed:
    """A topology as the lab's effective state keeps it (`topo`: MACs pinned, only requested
    addresses) and with every binding of the IPAM ledger (`assigned`: what resolve builds from)."""

    topo: topology.Topology
    assigned: ledger.Assigned


def addressed(topo: topology.Topology, effective: state.Effective | None) -> Addressed:
    """IPAM on the lab's effective state: each NIC stands for the NIC it was (nic_identity), and
    keeps the address the ledger bound to it."""
    from . import ledger, nic_identity, topology

    previous = topology.load_bytes(effective.topology, state.topology_file(topo.name)) if effective else None
    before = ledger.Ledger.from_json(effective.ledger) if effective else ledger.Ledger()
    pinned = nic_identity.pin(topo, previous)
    return Addressed(pinned, ledger.assign(pinned, before))


def with_image_facts(topo: topology.Topology) -> topology.Topology:
    """The topology with what each image file is (format, size, bootable), read with qemu-img
    where the topology does not say (a file written by hand; acli and the API fill them in)."""
    missing = [im for im in topo.images if im.size is None or im.format is None or im.bootable is None]
    if not missing:
        return topo
    from .host.storage import probe

    images = []
    for im in topo.images:
        if im in missing:
            facts = probe(im.source, f"image {im.name}")
            im = im.model_copy(update={"size": facts.size, "format": facts.format, "bootable": facts.bootable})
        images.append(im)
    return topo.model_copy(update={"images": images})


def desire(topo: topology.Topology, host: HostState, adapt: render.Adaptation) -> Desired:
    return rendered(model.resolve(topo, host.facts_for(topo.name)), adapt)  # resolve: final names, given the host


def rendered(lab: model.Lab, adapt: render.Adaptation) -> Desired:
    from . import render

    return Desired(lab, adapt, render.render_all(lab, adapt))  # render: libvirt XML, as this host can run it


def plan_up(desired: Desired, host: HostState) -> plan.Plan:
    return plan.plan(desired.lab, host, desired.docs, dhcp_digests(desired.lab), relay_version())  # plan: the diff


@functools.cache
def relay_version() -> str:
    """The labkit a lab's acli relay must run: this process's (read once; the relay reads its own)."""
    from . import memo

    return memo.code_digest()[:16]


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
        self._opening = [_Opening("labkit.host.virt", "Virt", "libvirt"), _Opening("labkit.host.ovs", "Ovs", "OVSDB"),
                         _Opening("labkit.host.netlink", "Netlink", "netlink")]
        self.virt, self.ovs, self.netlink = self._opening

    def close(self) -> None:
        for opening in self._opening:
            opening.close()


class _Opening:
    """An adapter being opened in a background thread; used as the adapter, it waits for it first
    (at most the host deadline: a system that does not answer is one sentence naming it)."""

    def __init__(self, module: str, cls: str, system: str):
        self._adapter, self._error, self._system = None, None, system
        self._thread = threading.Thread(target=self._open, args=(module, cls), daemon=True)
        self._thread.start()

    def _open(self, module: str, cls: str) -> None:
        import importlib

        try:
            self._adapter = getattr(importlib.import_module(module), cls)()
        except BaseException as exc:  # noqa: BLE001 - raised where the adapter is first used
            self._error = exc

    def adapter(self):
        from .host import DEADLINE, hung

        self._thread.join(DEADLINE)
        if self._thread.is_alive():
            raise hung(self._system, "connecting")
        if self._error is not None:
            raise self._error
        return self._adapter

    def __getattr__(self, attr: str):
        return getattr(self.adapter(), attr)

    def close(self) -> None:
        if not self._thread.is_alive() and self._adapter is not None:  # one still connecting is left behind
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
       reading=None, max_oversubscription: float | None = None, held: frozenset[str] = frozenset()) -> UpResult:
    """lab.up of a topology file: decided again only if its inputs or the host changed (memo.py).
    `held`: domains defined but neither started nor stopped (lab.restore resumes them from their saves)."""
    from . import memo

    _build_image(say, phases)
    with wanted_from(path, profile, lock=True, say=say) as (inputs, wanted):
        result, decided = _converge(wanted, inputs.effective, lambda: parse_inputs(inputs), path, strict=strict,
                                    say=say, phases=phases, reading=reading, max_oversubscription=max_oversubscription,
                                    held=held)
        if decided is not None and not memo.remember(inputs, *decided):
            say("the topology file changed while lab.up ran; run lab.up again to apply the change")
    return result


def up_topology(topo: topology.Topology, source: str | None, *, strict: bool = False, say=print,
                phases=None, reading=None, max_oversubscription: float | None = None) -> UpResult:
    """Bring the host to `topo`, a topology not (or no longer) the file `source` says (acli,
    manage-ovs): `source` is only recorded."""
    _build_image(say, phases)
    with state.LabLock(topo.name, say):
        return _converge(topo, state.read_effective(topo.name), None, source, strict=strict, say=say, phases=phases,
                         reading=reading, max_oversubscription=max_oversubscription)[0]


def _build_image(say, phases) -> None:
    from .timings import Phases

    if images.needs_build():
        with (phases or Phases()).phase("guest image"):
            images.build(say)                                             # the guest every domain boots


def _name(wanted) -> str:
    from . import memo

    return wanted.desired.lab.name if isinstance(wanted, memo.Remembered) else wanted.name


def _resolve(wanted, effective: state.Effective | None, reparse, facts: model.HostFacts):
    """(lab, addressed topology) for this host's `facts`: a remembered lab as it is, if resolved
    from these very facts (None: nothing decided); else the topology (parsed again with `reparse`
    if need be), given its addresses from the effective state, resolved now."""
    from . import memo

    if isinstance(wanted, memo.Remembered):
        if wanted.facts == facts:
            return wanted.desired.lab, None
        wanted = reparse()
    addr = addressed(with_image_facts(wanted), effective)
    return model.resolve(addr.assigned.topo, facts), addr


def _rendered(wanted, lab: model.Lab, adapt: render.Adaptation) -> Desired:
    """`lab` rendered for a host that needs `adapt`: a remembered decision's documents, where they
    were rendered for that very lab and adaptation."""
    from . import memo

    if isinstance(wanted, memo.Remembered) and wanted.desired.lab is lab and wanted.desired.adapt == adapt:
        return wanted.desired
    return rendered(lab, adapt)


def _converge(wanted, effective: state.Effective | None, reparse, source: str | None, *, strict: bool, say, phases,
              reading, max_oversubscription: float | None, held: frozenset[str] = frozenset()):
    """Bring the host to `wanted` (called with the lab's lock held): a topology.Topology, or a
    memo.Remembered decision (used as it is if the host facts it was decided from still hold,
    else decided again from `reparse()`). `effective`: the lab's effective state as read under
    the lock. `reading`: the host being read since the command started (host/observe.py).
    Returns the result and, when the lab was decided now, (facts, desired) to remember."""
    from .features import preflight
    from .host.observe import observe
    from .timings import Phases

    phase = (phases or Phases()).phase
    name = _name(wanted)
    max_oversubscription = max_oversubscription or preflight.MAX_OVERSUBSCRIPTION
    with state.names_lock(say):
        with phase("observe"):
            observed = observe(name, reading)                             # observe
        with phase("resolve, render, plan"):
            facts = observed.facts_for(name)
            lab, addr = _resolve(wanted, effective, reparse, facts)       # IPAM, resolve
            checks = preflight.run(lab, running=observed.running(name),   # what this host can do
                                   others=observed.other_guests(name), max_oversubscription=max_oversubscription)
            preflight.enforce(checks, strict)
            desired = _rendered(wanted, lab, checks.adaptation())         # render
            todo = plan_up(desired, observed)                             # plan
            todo, applied = _holding(todo, desired.lab, held)
        for note in addr.assigned.notes if addr else ():
            say(f"IPAM: {note}")
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
                Applier(host.ovs, host.netlink, host.virt, say, phase).apply(todo, applied)  # apply
    state.save(name, {"lab": name, "source": source, "profile": lab.profile,
                      "deviations": [str(d) for d in desired.deviations]})
    (state.lab_dir(name) / state.FAULTS).unlink(missing_ok=True)  # lab.break's faults: repaired now
    if addr is not None:  # what status, verify, acli, the API and a bare lab.up mean from now on
        save_effective(addr, effective)
    decided = (facts, desired) if addr is not None or desired is not getattr(wanted, "desired", None) else None
    return UpResult(desired, todo, checks), decided


def _holding(todo: plan.Plan, lab: model.Lab, held: frozenset[str]) -> tuple[plan.Plan, model.Lab]:
    """The plan and the lab to apply with the `held` domains defined (made anew if need be) but
    neither started nor stopped: lab.restore resumes them from their saves."""
    if not held:
        return todo, lab
    kept = tuple(a for a in todo.actions if not (a.kind == "domain" and a.verb in ("start", "stop") and a.name in held))
    return plan.Plan(todo.lab, kept), replace(lab, domains=tuple(replace(d, power_on=False) if d.name in held else d
                                                                 for d in lab.domains))


def save_effective(addr: Addressed, before: state.Effective | None) -> None:
    """The lab's effective state after a change: its topology, its ledger, and its records' logical
    timestamps, advanced for every record the change altered (any road: a file, acli, the API)."""
    import json

    from . import control, ledger

    name = addr.topo.name
    previous = None
    if before is not None:
        from . import topology

        previous = control.Control(topology.load_bytes(before.topology, state.topology_file(name)),
                                   ledger.Ledger.from_json(before.ledger), json.loads(before.stamps))
    stamps = control.after(previous, addr.topo, addr.assigned.ledger).timestamps
    state.save_effective(name, state.Effective(state.topology_yaml(name, addr.topo).encode(),
                                               addr.assigned.ledger.to_json().encode(),
                                               (json.dumps(stamps, indent=1, sort_keys=True) + "\n").encode()))


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
    from .features import preflight
    from .host.observe import observe

    with wanted_from(path, profile) as (inputs, wanted):                  # parse + validate
        observed = observe(inputs.lab, reading)                           # observe
        lab, _ = _resolve(wanted, inputs.effective, lambda: parse_inputs(inputs),
                          observed.facts_for(inputs.lab))                 # IPAM, resolve
    checks = preflight.run(lab, probe_kvm=False, running=observed.running(lab.name),
                           others=observed.other_guests(lab.name))
    desired = _rendered(wanted, lab, checks.adaptation())                 # render
    return Look(desired, observed, plan_up(desired, observed), checks)    # plan (not applied)


def resolved(path: str | None, reading=None) -> model.Lab:
    """The lab as it stands on this host (load, observe, resolve): what commands that only look at
    its objects need, without rendering or planning (remembered, where lab.up decided it from the
    same inputs and the host facts hold)."""
    return resolved_on(path, reading)[0]


def resolved_on(path: str | None, reading=None) -> tuple[model.Lab, HostState]:
    """resolved(), and the host it was resolved on."""
    from .host.observe import observe

    with wanted_from(path) as (inputs, wanted):                           # parse + validate
        observed = observe(inputs.lab, reading)                           # observe
        lab, _ = _resolve(wanted, inputs.effective, lambda: parse_inputs(inputs),
                          observed.facts_for(inputs.lab))                 # IPAM, resolve
    return lab, observed


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


BUSY = 0.6  # the host's CPU busier than this: guests are not settled, a failed check is tried again
SETTLED_TRIES = 2  # a check that still fails this many more times on a settled host is broken


def verify_lab(lab: model.Lab, timeout: float, say=print, phase=None, settled_tries: int = SETTLED_TRIES) -> Verification:
    """verify, for a lab already resolved (lab.up's): agents are sockets, no host session needed.

    A check that fails is tried again (with backoff, within `timeout`) while the guests are not
    settled (the host's CPU is busy: TCG guests still booting, say) and then twice more on a
    settled host: a failure is reported only when it persists, so a lab that is merely slow is
    not called broken, and a broken one is still named within seconds of settling (lab.check, which
    expects faults, asks `settled_tries` 0: what fails on the first try is reported, as it is now)."""
    import time

    from .features import verifier

    started = time.monotonic()
    phase = phase or (lambda _name: contextlib.nullcontext())
    lab = lab.running()  # VMs powered off are neither waited for nor probed
    say(f"waiting for {len(lab.domains)} guest(s) to boot (up to {timeout:.0f} s)")
    with phase("guests boot"):
        late = verifier.wait_for_guests(lab, timeout, say)
    say("checking the network from inside the guests")
    with phase("probes"):
        outcomes, dhcp = verifier.run(lab, late)
        pause, settled = 0.5, 0
        while True:
            failed = ({o.probe for o in outcomes if not o.ok and o.detail != verifier.DID_NOT_COME_UP},
                      {o.check for o in dhcp if not o.ok and o.detail != verifier.DID_NOT_COME_UP})
            if not any(failed) or settled >= settled_tries or time.monotonic() + pause > started + timeout:
                break
            busy = verifier.host_busy(pause)
            settled = 0 if busy > BUSY else settled + 1
            say(f"  {len(failed[0]) + len(failed[1])} check(s) failed; the host is {busy:.0%} busy"
                f"{' (guests not settled)' if busy > BUSY else ''}: trying them again")
            again, again_dhcp = verifier.run(lab, late, only=failed)
            outcomes = _merged(outcomes, again, lambda o: o.probe)
            dhcp = _merged(dhcp, again_dhcp, lambda o: o.check)
            pause = min(pause * 2, 4.0)
        return Verification(lab, outcomes, dhcp, late)


def _merged(outcomes: list, again: list, key) -> list:
    newer = {key(o): o for o in again}
    return [newer.get(key(o), o) for o in outcomes]
