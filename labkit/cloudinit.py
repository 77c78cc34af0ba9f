"""cloud-init NoCloud data for a VM that boots its own disk image (pure).

The seed (a small ISO labelled `cidata`, made by labkit/host/disks.py) holds:
meta-data (instance id, hostname), network-config (version 2: each NIC matched
by MAC, renamed, its addresses, the default route) and user-data that installs
and starts labkit's guest agent, so lab.verify and lab.console --cmd work in
real distributions too.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from .model import Domain

AGENT_SCRIPT = Path(__file__).resolve().parent.parent / "images" / "guest" / "labkit-agent"


def meta_data(dom: Domain) -> str:
    return f"instance-id: {dom.uuid}\nlocal-hostname: {dom.hostname}\n"


def network_config(dom: Domain) -> str:
    lines = ["version: 2", "ethernets:"]
    for nic in dom.nics:
        lines += [f"  {nic.guest_name}:", "    match:", f'      macaddress: "{nic.mac}"', f"    set-name: {nic.guest_name}"]
        if nic.mtu != 1500:
            lines.append(f"    mtu: {nic.mtu}")
        if nic.dhcp:  # a managed network: the node's DHCP server hands out the IPAM address
            lines.append("    dhcp4: true")
        elif nic.addresses:
            lines.append("    addresses:")
            lines += [f"      - {a}" for a in nic.addresses]
        if dom.gateway and any(ipaddress.IPv4Address(dom.gateway) in ipaddress.IPv4Interface(a).network
                               for a in nic.addresses):
            lines += ["    routes:", "      - to: default", f"        via: {dom.gateway}"]
    if any(nic.trunk for nic in dom.nics):
        lines.append("vlans:")
        for nic in dom.nics:
            addresses = dict(nic.vlan_addresses)
            for vlan in [v for v in nic.trunks if v != nic.native]:
                lines += [f"  {nic.guest_name}.{vlan}:", f"    id: {vlan}", f"    link: {nic.guest_name}"]
                if vlan in addresses:
                    lines += ["    addresses:", f"      - {addresses[vlan]}"]
    return "\n".join(lines) + "\n"


def user_data(dom: Domain) -> str:
    agent = AGENT_SCRIPT.read_text()
    body = "\n".join(f"      {line}" if line else "" for line in agent.splitlines())
    return (
        "#cloud-config\n"
        f"hostname: {dom.hostname}\n"
        "write_files:\n"
        "  - path: /usr/local/bin/labkit-agent\n"
        "    permissions: '0755'\n"
        "    content: |\n"
        f"{body}\n"
        "runcmd:\n"
        "  - [sh, -c, 'nohup /usr/local/bin/labkit-agent >/dev/null 2>&1 &']\n"
    )


def seed_files(dom: Domain) -> dict[str, str]:
    return {"meta-data": meta_data(dom), "network-config": network_config(dom), "user-data": user_data(dom)}
