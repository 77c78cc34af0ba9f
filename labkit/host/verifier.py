"""Run lab.verify's probes for real: wait for every guest's agent, then ping from inside the guests
(through the agent) and from the lab's namespaces."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import libvirt

from ..errors import HostError
from ..model import Lab
from ..verify import Outcome, Probe, guest_script, parse_script_output, probes
from .agent import Agent
from .ping import ping


def wait_for_guests(conn: libvirt.virConnect, lab: Lab, timeout: float, say=print) -> None:
    """Every domain's agent answers `hello`, or one error naming the ones that did not."""
    def one(name: str) -> str | None:
        with Agent(conn, name) as agent:
            try:
                agent.wait_boot(timeout)
                say(f"  {name} is up")
                return None
            except (TimeoutError, HostError):
                return name

    names = [d.name for d in lab.domains]
    with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        late = [n for n in pool.map(one, names) if n]
    if late:
        logs = ", ".join(lab.domain(n).serial_log for n in late)
        raise HostError(f"VM {', '.join(late)} did not come up within {timeout:.0f} s (its agent never answered); "
                        f"see {logs}, or raise --timeout")


def run(conn: libvirt.virConnect, lab: Lab) -> list[Outcome]:
    todo = probes(lab)
    by_guest: dict[str, list[Probe]] = {}
    for p in todo:
        if p.source.kind == "guest":
            by_guest.setdefault(p.source.name, []).append(p)

    def guest(name: str) -> list[Outcome]:
        mine = by_guest[name]
        with Agent(conn, name) as agent:
            try:
                result = agent.run(guest_script(mine), timeout=90)
            except (TimeoutError, HostError) as exc:  # a hung or stopped guest fails its probes, named
                return [Outcome(p, False, f"no answer from the agent ({exc})") for p in mine]
        statuses = parse_script_output(mine, result.output)
        return [Outcome(p, statuses[i] == 0, "" if statuses[i] < 98 else "the probe did not run")
                for i, p in enumerate(mine)]

    results: dict[Probe, Outcome] = {}
    with ThreadPoolExecutor(max_workers=max(1, len(by_guest))) as pool:
        for outcomes in pool.map(guest, list(by_guest)):
            results.update((o.probe, o) for o in outcomes)
    for p in todo:
        if p.source.kind == "netns":
            results[p] = Outcome(p, ping(p.source.name, p.address))
    return [results[p] for p in todo]
