"""lab.status: every object of the lab, wanted / present / healthy, from the plan and the live host.

An object with a pending `create` is missing; one with a pending update,
start or attach is present but not healthy (the action says why); the ports
libvirt makes for domain NICs are looked up by their OVS interface id and
their VLAN tag checked. The JSON form (`--json`) is versioned: see README.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from .model import Lab
from .plan import Plan

JSON_VERSION = 1


@dataclass(frozen=True)
class Row:
    kind: str
    name: str
    node: str | None
    wanted: bool
    present: bool
    healthy: bool
    detail: str = ""


@dataclass(frozen=True)
class Status:
    lab: str
    rows: tuple[Row, ...]
    deviations: tuple[str, ...]
    namespaces: dict[str, str]

    @property
    def healthy(self) -> bool:
        return all(r.healthy and r.present == r.wanted for r in self.rows)

    def to_json(self) -> str:
        return json.dumps({"version": JSON_VERSION, "lab": self.lab, "healthy": self.healthy,
                           "objects": [asdict(r) for r in self.rows], "deviations": list(self.deviations),
                           "namespaces": self.namespaces}, indent=1)

    def table(self) -> str:
        width = max((len(r.name) for r in self.rows), default=4)
        out = [f"lab {self.lab}: {'healthy' if self.healthy else 'NOT healthy'}",
               f"  {'kind':<10} {'name':<{width}}  wanted present healthy  detail"]
        for r in self.rows:
            out.append(f"  {r.kind:<10} {r.name:<{width}}  {_yn(r.wanted):<6} {_yn(r.present):<7} {_yn(r.healthy):<7}  {r.detail}")
        if self.namespaces:
            out.append("node namespaces (ip netns exec NAME ...):")
            out += [f"  {node}: {ns}" for node, ns in self.namespaces.items()]
        if self.deviations:
            out.append("deviations from AHV on this host:")
            out += [f"  {d}" for d in self.deviations]
        return "\n".join(out)


def _yn(value: bool) -> str:
    return "yes" if value else "no"


def build(lab: Lab, pending: Plan, vm_ports: dict[str, tuple[str, int | None, str]],
          deviations: list[str], bond_problems: dict[str, list[str]] | None = None) -> Status:
    """`vm_ports`: OVS interface id -> (port name, tag, error) for ports libvirt made;
    `bond_problems`: bond port -> its members' problems (link down, LACP not negotiated)."""
    bond_problems = bond_problems or {}
    actions = {}
    for a in pending.actions:
        actions.setdefault((a.kind, a.where, a.name), a)
        actions.setdefault((a.kind, "", a.name), a)
    rows: list[Row] = []

    def add(kind: str, name: str, node: str | None, where: str = "", problems: list[str] = (), note: str = "",
            label: str | None = None) -> None:
        a = actions.get((kind, where, name))
        label = label or name
        if a is None:
            rows.append(Row(kind, label, node, True, True, not problems, "; ".join(problems) or note))
        elif a.verb == "create":
            rows.append(Row(kind, label, node, True, False, False, "missing"))
        else:
            rows.append(Row(kind, label, node, True, True, False, f"{a.verb}: {a.detail}".rstrip(": ")))

    for ns in lab.namespaces:
        add("netns", ns.name, ns.node)
        for dest, gateway in ns.routes:
            add("route", dest, ns.node, where=ns.name, label=f"{ns.name}/{dest}", note=f"via {gateway}")
    for veth in lab.veths:
        add("veth", veth.name if veth.netns is None else f"{veth.netns}/{veth.name}", None)
        for end, impairment in veth.impaired:  # the topology's impair:
            add("impair", end, veth.node, note=str(impairment))
    for linux_bridge in lab.linux_bridges:
        add("linux-bridge", linux_bridge.name, linux_bridge.node)
    for bridge in lab.bridges:
        add("ovs-bridge", bridge.name, bridge.node)
        for port in bridge.ports:
            add("ovs-port", port.name, bridge.node, where=bridge.name, problems=bond_problems.get(port.name, []))
        if bridge.flows:  # the lab's OpenFlow rules (managed networks' DHCP)
            add("ovs-flows", bridge.name, bridge.node, note=f"{len(bridge.flows)} rules")
    for server in lab.dhcp_servers:
        add("dhcp", server.node, server.node, note=f"dnsmasq in {server.netns}, {len(server.hosts)} binding(s)")
    if any(d.role == "cvm" for d in lab.domains):
        add("relay", lab.name, None, note="answers acli typed in the CVMs")
    for net in lab.networks:
        add("network", net.name, net.node)
    for dom in lab.domains:
        add("domain", dom.name, dom.node, note="" if dom.power_on else "powered off")
        for nic in dom.nics:
            if nic.kind != "ovs" or not dom.power_on:  # a VM powered off has no ports
                continue
            want_tag = nic.native if nic.trunk else nic.tag
            found = vm_ports.get(nic.interfaceid)
            label = f"{dom.name}/{nic.guest_name}"
            if found is None:
                rows.append(Row("vm-port", label, dom.node, True, False, False, f"no OVS port with iface-id {nic.interfaceid}"))
                continue
            port, tag, error = found
            problems = [f"tag {tag}, want {want_tag}"] if tag != want_tag else []
            problems += [error] if error else []
            rows.append(Row("vm-port", label, dom.node, True, True, not problems,
                            "; ".join(problems) or f"{port} on {nic.source}" + (f" tag {tag}" if tag is not None else "")))
    for a in pending.actions:
        if a.verb == "delete":
            rows.append(Row(a.kind, a.name, None, False, True, True, "left over: lab.up removes it"))
    namespaces = {ns.node: ns.name for ns in lab.namespaces if ns.role == "node"}
    for a in pending.actions:
        if a.kind == "impair" and a.obj is None:  # made by hand (lab.impair), not in the topology: drift
            rows.append(Row("impair", a.name, None, False, True, False, f"{a.detail}; lab.up clears it"))
    return Status(lab.name, tuple(rows), tuple(deviations), namespaces)
