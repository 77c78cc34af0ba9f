"""lab.check: what is still broken in a lab, for a trainee, without saying how to fix it (pure).

Three sources, one table: the lab's network checked from inside its guests (lab.verify's probes
and DHCP checks: the symptoms), its bonds as OVS reports them (a member without link, LACP not
negotiated), and every object of the host that differs from the lab's design (lab.status's
drift), named but not diffed: the fix is the trainee's to find. Objects of the lab's that are left
over but no longer plugged into anything (a namespace, a veth, a daemon whose port is gone) are
lab.up's to tidy, not a fault.
"""

from __future__ import annotations

from dataclasses import dataclass

from .model import Lab
from .plan import Plan
from .verify import describe_failure

# Left-over objects that carry no traffic once their port is gone (lab.up removes them).
INERT = {"netns", "veth", "dhcp", "linux-bridge", "relay", "volume", "pool"}


@dataclass(frozen=True)
class Finding:
    area: str  # network, DHCP, bond, design
    where: str
    problem: str


def findings(lab: Lab, pending: Plan, bond_problems: dict[str, list[str]], verification) -> list[Finding]:
    out = [Finding("network", o.probe.source.label, describe_failure(o).removeprefix(o.probe.source.label).strip())
           for o in verification.failed]
    out += [Finding("DHCP", o.check.source.label, f"{o.check}: {o.detail}" if o.detail else str(o.check))
            for o in verification.dhcp_failed]
    node_of = {p.name: b.node for b in lab.bridges for p in b.ports}
    for port, problems in sorted(bond_problems.items()):
        out += [Finding("bond", f"{node_of.get(port) or 'switch'} {port}", problem) for problem in problems]
    out += [f for a in pending.actions if (f := _drift(lab, a)) is not None]
    return out


def _drift(lab: Lab, action) -> Finding | None:
    if action.kind == "relay" or (action.verb == "delete" and action.kind in INERT):
        return None
    if action.kind == "vm-port":
        owner = next((f"{d.ahv_name or d.name} {n.guest_name}" for d in lab.domains for n in d.nics if n is action.obj),
                     action.name)
        return Finding("design", f"{owner}'s port", "not as the lab was designed")
    where = f"{action.where}/{action.name}" if action.where else action.name
    problem = {"create": "missing", "delete": "not part of the lab's design", "start": "not running"}.get(
        action.verb, "not as the lab was designed")
    return Finding("design", f"{action.kind} {where}", problem)


def table(lab_name: str, found: list[Finding], checked: int) -> str:
    if not found:
        return f"lab {lab_name}: nothing is broken ({checked} checks from inside the guests passed, the host matches its design)"
    width = max(len(f.where) for f in found)
    lines = [f"lab {lab_name}: {len(found)} problem(s) left; lab.check exits 1 until none is",
             f"  {'area':<8} {'where':<{width}}  problem"]
    lines += [f"  {f.area:<8} {f.where:<{width}}  {f.problem}" for f in found]
    return "\n".join(lines)
