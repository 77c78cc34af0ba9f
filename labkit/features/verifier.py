"""Run lab.verify's probes for real: wait for every guest's agent, then probe from inside the guests
(one lkping command each, through the agent) and from the lab's namespaces, all at the same time.

A guest that does not come up is reported by name; the others are verified all the same.
"""

from __future__ import annotations

import ipaddress
import os
from concurrent.futures import ThreadPoolExecutor

from typing import TYPE_CHECKING

from ..host.agent import Agent, AgentError
from ..model import Lab

if TYPE_CHECKING:
    from ..dhcpcheck import DhcpOutcome
    from ..verify import Outcome

RUN_SLACK = 10.0  # seconds for the agent to run lkping beyond lkping's own bound
DID_NOT_COME_UP = "the VM did not come up"  # a check not tried: its guest, or its target, is not up
# Guests probing at once: TCG guests share the host's cores, and a hundred probing together each get
# too little CPU for their probes' own timers (a few per core keep every probe's timing honest).
GUESTS_AT_ONCE = int(os.environ.get("LABKIT_GUESTS_AT_ONCE", 8 * (os.cpu_count() or 1)))


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


def run(lab: Lab, down: list[str] = (), only: tuple[set, set] | None = None) -> tuple[list[Outcome], list[DhcpOutcome]]:
    """Every probe and DHCP check of the lab (or, with `only`, those probes and DHCP checks); those
    from a guest in `down` fail without being tried."""
    from .. import dhcpcheck  # these and pyroute2: not for commands that only wait for agents
    from ..dhcpcheck import DhcpCheck, DhcpOutcome
    from ..host.ping import ping_many
    from ..verify import (DUPLICATE, NOT_RUN, REACH_MS, TWO_ANSWERS, Outcome, Probe, guest_script,
                          parse_script_output, probes)

    todo = probes(lab)
    dhcp_todo, rogues = dhcpcheck.checks(lab)
    if only is not None:
        todo = [p for p in todo if p in only[0]]
        dhcp_todo = [c for c in dhcp_todo if c in only[1]]
        rogues = [r for r in rogues if any(c.rogue == r for c in dhcp_todo)]
    rogues_up = _start_rogues(lab, [r for r in rogues if r.source.name not in down])
    # Reaching a guest that is not up is known to fail: not tried, so that it costs no timeout.
    unreachable = {str(ipaddress.IPv4Interface(a).ip) for name in down for nic in lab.domain(name).nics
                   for a in nic.addresses + tuple(cidr for _, cidr in nic.vlan_addresses)}
    results: dict[Probe, Outcome] = {p: Outcome(p, False, DID_NOT_COME_UP, ran=False)
                                     for p in todo if p.expect and p.address in unreachable}
    by_guest: dict[str, tuple[list[Probe], list[DhcpCheck]]] = {}
    for p in todo:
        if p.source.kind == "guest" and p not in results:
            by_guest.setdefault(p.source.name, ([], []))[0].append(p)
    dhcp_results: list[DhcpOutcome] = []
    for c in dhcp_todo:
        if c.rogue is not None and c.rogue not in rogues_up:
            dhcp_results.append(DhcpOutcome(c, False, f"the rogue server in {c.rogue.source.name} did not start", ran=False))
        else:
            by_guest.setdefault(c.source.name, ([], []))[1].append(c)

    def guest(name: str) -> tuple[list[Outcome], list[DhcpOutcome]]:
        mine, dhcp = by_guest[name]
        if name in down:
            return ([Outcome(p, False, DID_NOT_COME_UP, ran=False) for p in mine],
                    [DhcpOutcome(c, False, DID_NOT_COME_UP, ran=False) for c in dhcp])
        dom = lab.domain(name)
        script = dhcpcheck.guest_script(dhcp) + " " + (guest_script(mine) + "; " if mine else "") + "wait"
        try:
            with Agent(name, dom.agent_socket) as agent:
                result = agent.run(script.strip(), timeout=REACH_MS / 1000 + RUN_SLACK)
        except AgentError as exc:  # a hung or stopped guest fails its checks, named
            return ([Outcome(p, False, f"no answer from the agent ({exc})", ran=False) for p in mine],
                    [DhcpOutcome(c, False, f"no answer from the agent ({exc})", ran=False) for c in dhcp])
        statuses = parse_script_output(mine, result.output)
        return ([Outcome(p, statuses[i] == 0, "the probe did not run" if statuses[i] == NOT_RUN else
                         DUPLICATE if statuses[i] == TWO_ANSWERS else "",
                         ran=statuses[i] in (0, 1, TWO_ANSWERS, 97)) for i, p in enumerate(mine)],
                dhcpcheck.evaluate(dhcp, result.output))

    from_netns = [p for p in todo if p.source.kind == "netns" and p not in results]
    with ThreadPoolExecutor(max_workers=max(1, min(len(by_guest), GUESTS_AT_ONCE))) as pool:
        futures = [pool.submit(guest, name) for name in by_guest]
        answered = ping_many([(p.source.name, p.address) for p in from_netns], timeout=REACH_MS / 1000)
        for future in futures:
            pings, dhcp = future.result()
            results.update((o.probe, o) for o in pings)
            dhcp_results += dhcp
    results.update((p, Outcome(p, reached)) for p, reached in zip(from_netns, answered))
    order = {c: i for i, c in enumerate(dhcp_todo)}
    return [results[p] for p in todo], sorted(dhcp_results, key=lambda o: order[o.check])


def host_busy(seconds: float) -> float:
    """The share of the host's CPU time spent busy over the next `seconds` (from /proc/stat): TCG
    guests that are still booting, or a host doing other work, show here."""
    import time

    def sample() -> tuple[int, int]:
        fields = [int(v) for v in open("/proc/stat").readline().split()[1:]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    total, idle = sample()
    time.sleep(seconds)
    total2, idle2 = sample()
    return 1 - (idle2 - idle) / max(1, total2 - total)


def _start_rogues(lab: Lab, rogues: list) -> set:
    """Start the rogue DHCP servers of the `alone` checks (in the background in their guests);
    returns those that started."""
    from .. import dhcpcheck

    def start(rogue):
        try:
            with Agent(rogue.source.name, lab.domain(rogue.source.name).agent_socket) as agent:
                return rogue if agent.run(dhcpcheck.rogue_script(rogue), timeout=RUN_SLACK).status == 0 else None
        except AgentError:
            return None

    if not rogues:
        return set()
    with ThreadPoolExecutor(max_workers=len(rogues)) as pool:
        return {r for r in pool.map(start, rogues) if r is not None}

