"""lab.list (pure): every lab on the host, from its marks on the host and its saved topology.

A lab is `up` when its saved topology's domains that should run are running, `partial` when
some of its objects are there but not all of that holds, `left over` when objects marked as its
remain without a saved topology (a killed lab.down: lab.down --lab NAME removes them),
`unreadable` when its saved topology does not load in this labkit (written by another version or
edited by hand): the other labs are still listed, and lab.down --lab NAME still removes it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from .hoststate import HostState
from .model import Lab


@dataclass(frozen=True)
class LabSummary:
    name: str
    state: str  # up | partial | left over | unreadable
    nodes: int
    vms_running: int
    vms: int
    bridges: tuple[str, ...]  # OVS bridges, the lab's top-of-rack included
    networks: tuple[str, ...]  # libvirt networks
    domains: tuple[str, ...]
    namespaces: tuple[str, ...]
    problem: str = ""  # why an unreadable lab's saved topology does not load


def summarize(host: HostState, labs: dict[str, Lab], unreadable: dict[str, str] | None = None) -> list[LabSummary]:
    """`labs`: lab name -> the lab resolved from its saved (effective) topology, for labs that have one;
    `unreadable`: lab name -> why its saved topology did not load."""
    unreadable = unreadable or {}
    names = {b.lab for b in host.bridges} | {n.lab for n in host.networks} | {d.lab for d in host.domains} \
        | {ns.lab for ns in host.namespaces} | {link.lab for link in host.links} | set(labs) | set(unreadable)
    out = []
    for name in sorted(n for n in names if n):
        seen = [d for d in host.domains if d.lab == name]
        running = {d.name for d in seen if d.active}
        lab = labs.get(name)
        if name in unreadable:
            state, nodes, vms, vms_running = "unreadable", 0, len(seen), len(running)
        elif lab is None:
            state, nodes, vms, vms_running = "left over", 0, len(seen), len(running)
        else:
            uvms = [d for d in lab.domains if d.role == "uvm"]
            up = all(d.name in running for d in lab.domains if d.power_on)
            state, nodes = ("up" if up else "partial"), len(lab.node_names)
            vms, vms_running = len(uvms), sum(1 for d in uvms if d.name in running)
        out.append(LabSummary(
            name, state, nodes, vms_running, vms,
            tuple(sorted(b.name for b in host.bridges if b.lab == name)),
            tuple(sorted(n.name for n in host.networks if n.lab == name)),
            tuple(sorted(d.name for d in seen)),
            tuple(sorted(ns.name for ns in host.namespaces if ns.lab == name)), unreadable.get(name, "")))
    return out


def table(labs: list[LabSummary]) -> str:
    if not labs:
        return "no labs on this host"
    width = max(len(lab.name) for lab in labs)
    lines = [f"{'lab':<{width}}  {'state':<10}  nodes  VMs (running/all)"]
    for lab in labs:
        lines.append(f"{lab.name:<{width}}  {lab.state:<10}  {lab.nodes:>5}  {lab.vms_running}/{lab.vms}")
    for lab in labs:
        lines.append(f"{lab.name}: bridges {', '.join(lab.bridges) or '-'}; networks {', '.join(lab.networks) or '-'}; "
                     f"domains {', '.join(lab.domains) or '-'}; namespaces {', '.join(lab.namespaces) or '-'}")
    for lab in labs:
        if lab.problem:
            lines.append(f"{lab.name}: {lab.problem}; lab.down --lab {lab.name} removes it")
    return "\n".join(lines)


def to_json(labs: list[LabSummary]) -> str:
    return json.dumps({"version": 1, "labs": [asdict(lab) for lab in labs]}, indent=1)
