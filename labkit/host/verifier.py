"""Run lab.verify's probes for real: wait for every guest's agent, then probe from inside the guests
(one lkping command each, through the agent) and from the lab's namespaces, all at the same time.

A guest that does not come up is reported by name; the others are verified all the same.
"""

from __future__ import annotations

import ipaddress
from concurrent.futures import ThreadPoolExecutor

from ..model import Lab
from ..verify import NOT_RUN, REACH_MS, Outcome, Probe, guest_script, parse_script_output, probes
from .agent import Agent, AgentError

RUN_SLACK = 10.0  # seconds for the agent to run lkping beyond lkping's own bound


def wait_for_guests(lab: Lab, timeout: float, say=print, names: list[str] | None = None) -> list[str]:
    """Wait until every domain's agent answers `hello`; returns the names that did not within `timeout`."""
    def one(dom) -> str | None:
        with Agent(dom.name, dom.agent_socket) as agent:
            try:
                agent.wait_boot(timeout)
            except AgentError:
                return dom.name
        say(f"  {dom.name} is up")
        return None

    domains = [d for d in lab.domains if names is None or d.name in names]
    if not domains:
        return []
    with ThreadPoolExecutor(max_workers=len(domains)) as pool:
        return [n for n in pool.map(one, domains) if n]


def run(lab: Lab, down: list[str] = ()) -> list[Outcome]:
    """Every probe of the lab; those from a guest in `down` fail without being tried."""
    from .ping import ping_many  # pyroute2: not for commands that only wait for agents

    todo = probes(lab)
    # Reaching a guest that is not up is known to fail: not tried, so that it costs no timeout.
    unreachable = {str(ipaddress.IPv4Interface(a).ip) for name in down for nic in lab.domain(name).nics
                   for a in nic.addresses + tuple(cidr for _, cidr in nic.vlan_addresses)}
    results: dict[Probe, Outcome] = {p: Outcome(p, False, "the VM did not come up", ran=False)
                                     for p in todo if p.expect and p.address in unreachable}
    by_guest: dict[str, list[Probe]] = {}
    for p in todo:
        if p.source.kind == "guest" and p not in results:
            by_guest.setdefault(p.source.name, []).append(p)

    def guest(name: str) -> list[Outcome]:
        mine = by_guest[name]
        if name in down:
            return [Outcome(p, False, "the VM did not come up", ran=False) for p in mine]
        dom = lab.domain(name)
        try:
            with Agent(name, dom.agent_socket) as agent:
                result = agent.run(guest_script(mine), timeout=REACH_MS / 1000 + RUN_SLACK)
        except AgentError as exc:  # a hung or stopped guest fails its probes, named
            return [Outcome(p, False, f"no answer from the agent ({exc})", ran=False) for p in mine]
        statuses = parse_script_output(mine, result.output)
        return [Outcome(p, statuses[i] == 0, "the probe did not run" if statuses[i] == NOT_RUN else "",
                        ran=statuses[i] in (0, 1, 97)) for i, p in enumerate(mine)]

    from_netns = [p for p in todo if p.source.kind == "netns" and p not in results]
    with ThreadPoolExecutor(max_workers=max(1, len(by_guest))) as pool:
        futures = [pool.submit(guest, name) for name in by_guest]
        answered = ping_many([(p.source.name, p.address) for p in from_netns], timeout=REACH_MS / 1000)
        for future in futures:
            results.update((o.probe, o) for o in future.result())
    results.update((p, Outcome(p, reached)) for p, reached in zip(from_netns, answered))
    return [results[p] for p in todo]

