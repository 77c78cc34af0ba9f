"""lab.diagram (pure): the lab as a graphviz graph, with the names actually used on the host.

One cluster per node (its OVS bridges, bond, uplink NICs, CVM, VMs and local network), the
top-of-rack switch(es) with their VLAN gateways above them; links that are down are drawn red
and dashed. `dot` lays it out (host/diagram rendering is a subprocess: graphviz has no library
API worth binding for this).
"""

from __future__ import annotations

from .model import Lab, OvsBridge

NL = "\\n"  # a line break inside a graphviz label


def _q(text: str) -> str:
    """A quoted graphviz ID; labkit's names hold no quotes or backslashes (validation), NL is kept."""
    return '"' + text.replace('"', "'") + '"'


def _vlans(nic) -> str:
    if nic.trunk:
        native = f", native {nic.native}" if nic.native is not None else ""
        return "trunk " + ",".join(str(v) for v in nic.trunks) + native
    return "untagged" if nic.tag is None else f"VLAN {nic.tag}"


def dot(lab: Lab, down: frozenset[str] = frozenset(), impaired: dict[str, str] | None = None) -> str:
    """`down`: interface names whose link is down on the host now; `impaired`: interface name ->
    its impairment (lab.impair), drawn orange with what it is."""
    impaired = impaired or {}
    out = [f"graph {_q(lab.name)} {{",
           f"  label={_q(f'lab {lab.name}')}; labelloc=t; fontname=Helvetica; rankdir=TB; nodesep=0.3; ranksep=0.8;",
           "  node [fontname=Helvetica, fontsize=10]; edge [fontname=Helvetica, fontsize=9];"]

    def edge(a: str, b: str, label: str = "", links: tuple[str, ...] = ()) -> None:
        broken = [link for link in links if link in down]
        bad = [impaired[link] if link == label else f"{link}: {impaired[link]}" for link in links if link in impaired]
        style = ', color=red, style=dashed, fontcolor=red' if broken else ', color=orange, fontcolor=darkorange' if bad else ""
        if broken:
            label = (f"{label}{NL}" if label and label not in broken else "") + f"{', '.join(broken)} DOWN"
        if bad:
            label = NL.join([label] * bool(label) + bad)
        text = label
        out.append(f"  {_q(a)} -- {_q(b)} [label={_q(text)}{style}];")

    switches = [b for b in lab.bridges if b.role == "tor"]
    out.append("  { rank=min;")
    for sw in switches:
        vlans = ",".join(map(str, sorted({v for p in sw.ports for v in p.trunks} | {p.tag for p in sw.ports if p.tag is not None})))
        label = _q(f"{sw.name}{NL}top-of-rack ({sw.ahv_name}){NL}VLANs {vlans}")
        out.append(f"    {_q(sw.name)} [shape=box3d, style=filled, fillcolor=lightgrey, label={label}];")
    out.append("  }")
    gateways = {v.peer: v for v in lab.veths if v.purpose == "gateway"}
    for sw in switches:
        for port in sw.ports:
            if port.name in gateways:
                gw = gateways[port.name]
                label = _q(f"{gw.netns}{NL}{gw.addresses[0]}")
                out.append(f"  {_q(port.name)} [shape=note, label={label}];")
                edge(sw.name, port.name, f"tag {port.tag}", (port.name,))
    isl = [v for v in lab.veths if v.purpose == "isl"]
    for v in isl:
        edge(switches[0].name, switches[-1].name, "inter-switch link", (v.name, v.peer))
    tor_of = {i.name: sw.name for sw in switches for p in sw.ports for i in p.interfaces}

    for node in lab.node_names:
        ns = next((n for n in lab.namespaces if n.role == "node" and n.node == node), None)
        host = next((v for v in lab.veths if v.purpose == "host" and v.netns == (ns.name if ns else None)), None)
        title = f"node {node}" + (f"{NL}{ns.name}" if ns else "") + (f"{NL}host {host.addresses[0]}" if host else "")
        out.append(f"  subgraph {_q('cluster_' + node)} {{")
        out.append(f"    label={_q(title)}; style=rounded; color=steelblue;")
        for bridge in (b for b in lab.bridges if b.role == "node" and b.node == node):
            _bridge(out, edge, lab, bridge, tor_of)
        for local in (b for b in lab.linux_bridges if b.node == node):
            label = _q(f"{local.name}{NL}NTNX-Local-Network 192.168.5.0/24")
            out.append(f"    {_q(local.name)} [shape=box, style=dashed, label={label}];")
        for dom in (d for d in lab.domains if d.node == node):
            shape = "doubleoctagon" if dom.role == "cvm" else "ellipse"
            style = "" if dom.power_on else ", style=dashed"
            addresses = [a for nic in dom.nics for a in nic.addresses[:1]] + [c for nic in dom.nics for _, c in nic.vlan_addresses]
            label = dom.name + "".join(f"{NL}{a}" for a in addresses[:3]) + ("" if dom.power_on else f"{NL}(off)")
            out.append(f"    {_q(dom.name)} [shape={shape}{style}, label={_q(label)}];")
            for nic in dom.nics:
                if nic.kind == "ovs":
                    edge(dom.name, nic.source, f"{nic.target or nic.guest_name} {_vlans(nic)}")
                else:
                    local = next((b.name for b in lab.linux_bridges if b.node == node), nic.source)
                    edge(dom.name, local, nic.guest_name)
        out.append("  }")
    out.append("}")
    return "\n".join(out) + "\n"


def _bridge(out: list, edge, lab: Lab, bridge: OvsBridge, tor_of: dict) -> None:
    label = bridge.name + (f" ({bridge.ahv_name})" if bridge.ahv_name != bridge.name else "")
    out.append(f"    {_q(bridge.name)} [shape=box, style=filled, fillcolor=lightyellow, label={_q(label)}];")
    uplink_nic = {v.peer: v for v in lab.veths if v.purpose == "uplink"}
    for port in bridge.ports:
        members = [i.name for i in port.interfaces if i.name in uplink_nic]
        if not members:
            continue
        if port.bond_mode or len(port.interfaces) > 1:
            mode = port.bond_mode or "active-backup"
            bond = f"{bridge.name}/{port.name}"
            label = _q(f"bond {port.name}{NL}{mode}" + (" LACP" if port.lacp == "active" else ""))
            out.append(f"    {_q(bond)} [shape=hexagon, label={label}];")
            edge(bridge.name, bond)
            parent = bond
        else:
            parent = bridge.name
        for member in members:
            veth = uplink_nic[member]
            label = _q(f"{member}{NL}({veth.uplink})")
            out.append(f"    {_q(member)} [shape=box, style=rounded, label={label}];")
            edge(parent, member)
            edge(member, tor_of.get(veth.name, "?"), veth.name, (veth.name, veth.peer))
