"""What lab.verify expects of DHCP on managed networks, from the model (pure), checked from inside
the guests with the built-in guest's DHCP client record (images/guest/labkit-dhcp) and lkdhcp
(images/guest/lkdhcp.c):

- `lease`: a NIC on a managed network holds its IPAM address, leased by its node's DHCP server,
  with the network's options (router, DNS, domain, search, TFTP server, boot file);
- `silent`: on a node that serves DHCP, a NIC on an unmanaged network hears no offer at all;
- `alone`: while another VM on the managed network runs a rogue DHCP server (lkdhcp -s, which
  also broadcasts unsolicited offers), a NIC asking for an address hears its node's offer of its
  own address and nothing from the rogue.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from .model import DhcpSubnet, Lab
from .verify import Endpoint

LISTEN_MS = 800  # how long lkdhcp listens for offers after its DISCOVER
ROGUE_MS = 15000  # how long a rogue serves: started before every guest's checks, it outlasts them


@dataclass(frozen=True)
class Rogue:
    source: Endpoint
    dev: str
    address: str  # the server identifier it claims (an unused address of the subnet)


@dataclass(frozen=True)
class DhcpCheck:
    kind: str  # lease, silent, alone
    source: Endpoint
    dev: str
    address: str = ""  # lease, alone: the NIC's IPAM address (cidr)
    server: str = ""  # lease, alone: the node's DHCP server
    options: tuple[tuple[str, str], ...] = ()  # lease: what the lease says besides (labkit-dhcp's keys)
    rogue: Rogue | None = None  # alone

    def __str__(self) -> str:
        where = f"{self.source.label} {self.dev}" if self.dev != "eth0" else self.source.label
        if self.kind == "lease":
            return f"{where} holds {self.address} by DHCP from {self.server}"
        if self.kind == "silent":
            return f"{where} (unmanaged network) gets no DHCP offer"
        return f"{where} hears only {self.server} while {self.rogue.source.label} runs a rogue DHCP server"


@dataclass(frozen=True)
class DhcpOutcome:
    check: DhcpCheck
    ok: bool
    detail: str = ""
    ran: bool = True


def checks(lab: Lab) -> tuple[list[DhcpCheck], list[Rogue]]:
    """The lab's DHCP checks, and the rogue servers the `alone` checks need running first."""
    served = {s.node: {sub.network: sub for sub in s.subnets} for s in lab.dhcp_servers}
    out: list[DhcpCheck] = []
    rogues: list[Rogue] = []
    for dom in lab.domains:
        if dom.role != "uvm":
            continue
        me = Endpoint("guest", dom.name, dom.name)
        for nic in dom.nics:
            if nic.dhcp:
                sub = served[dom.node][nic.network]
                out.append(DhcpCheck("lease", me, nic.guest_name, nic.addresses[0], sub.server, _options(sub)))
            elif dom.node in served and nic.kind == "ovs" and not nic.trunk:
                out.append(DhcpCheck("silent", me, nic.guest_name))
    for node, subnets in served.items():
        for sub in subnets.values():
            members = _members(lab, node, sub)
            listeners = [m for m in members if m[2]]
            for dom, dev, _ in listeners[:1]:
                rogue = next(((d, v) for d, v, _ in members if d is not dom), None)
                if rogue is None:
                    continue  # nobody else on the network to play the rogue
                address = _unused(lab, sub)
                r = Rogue(Endpoint("guest", rogue[0].name, rogue[0].name), rogue[1], address)
                rogues.append(r)
                nic = next(n for n in dom.nics if n.guest_name == dev)
                out.append(DhcpCheck("alone", Endpoint("guest", dom.name, dom.name), dev, nic.addresses[0],
                                     sub.server, rogue=r))
    return out, rogues


def _options(sub: DhcpSubnet) -> tuple[tuple[str, str], ...]:
    return (("router", sub.gateway), ("dns", ",".join(sub.dns)), ("domain", sub.domain_name or ""),
            ("search", ",".join(sub.domain_search)), ("tftp", sub.tftp_server or ""),
            ("bootfile", sub.boot_file or ""))


def _members(lab: Lab, node: str, sub: DhcpSubnet) -> list[tuple]:
    """(domain, guest device, managed) of every user VM interface of the node in the network's VLAN:
    its managed NICs first, then trunk sub-interfaces carrying the VLAN."""
    managed, trunks = [], []
    for dom in lab.domains:
        if dom.node != node or dom.role != "uvm":
            continue
        for nic in dom.nics:
            if nic.dhcp and nic.network == sub.network:
                managed.append((dom, nic.guest_name, True))
            elif sub.vlan in nic.trunks:
                trunks.append((dom, f"{nic.guest_name}.{sub.vlan}", False))
    return managed + trunks


def _unused(lab: Lab, sub: DhcpSubnet) -> str:
    used = {str(ipaddress.IPv4Interface(a).ip) for d in lab.domains for n in d.nics
            for a in n.addresses + tuple(c for _, c in n.vlan_addresses)}
    used |= {sub.server, sub.gateway}
    return next(str(h) for h in reversed(list(ipaddress.IPv4Network(sub.subnet).hosts())) if str(h) not in used)


def rogue_script(rogue: Rogue) -> str:
    """Start the rogue server in the background (it stops itself after ROGUE_MS)."""
    return f"(lkdhcp -s {rogue.address} -t {ROGUE_MS} {rogue.dev} >/dev/null 2>&1 &)"


def guest_script(mine: list[DhcpCheck]) -> str:
    """Shell statements running a guest's DHCP checks, listeners in the background (a `wait` after
    them collects them): `L<i> <key=value>...`, `L<i> held` and `D<i> offer <server> <address>` lines."""
    parts = []
    for i, c in enumerate(mine):
        if c.kind == "lease":
            parts.append(f"{{ echo L{i} $(cat /run/dhcp.{c.dev} 2>/dev/null); "
                         f"ip -4 addr show dev {c.dev} | grep -q ' inet {c.address} ' && echo L{i} held; }};")
        else:
            parts.append(f"lkdhcp -t {LISTEN_MS} {c.dev} | sed 's/^/D{i} /' &")
    return " ".join(parts)


def evaluate(mine: list[DhcpCheck], output: str) -> list[DhcpOutcome]:
    lines = [line.split() for line in output.splitlines()]
    out = []
    for i, c in enumerate(mine):
        said = [w[1:] for w in lines if w and w[0] in (f"L{i}", f"D{i}")]
        if c.kind == "lease":
            lease = dict(w.split("=", 1) for words in said for w in words if "=" in w)
            if not lease:
                out.append(DhcpOutcome(c, False, "it has no DHCP lease"))
                continue
            wrong = [f"{k} {lease.get(k, '')!r} (expected {v!r})" for k, v in
                     (("ip", c.address), ("server", c.server), *c.options) if lease.get(k, "") != v]
            if not any(words == ["held"] for words in said):
                wrong.append(f"{c.address} is not on {c.dev}")
            out.append(DhcpOutcome(c, not wrong, "; ".join(wrong)))
            continue
        offers = sorted({(w[1], w[2]) for w in said if len(w) == 3 and w[0] == "offer"})
        heard = ", ".join(f"{a} from {s}" for s, a in offers)
        if c.kind == "silent":
            out.append(DhcpOutcome(c, not offers, f"offered {heard}" if offers else ""))
        else:
            want = (c.server, str(ipaddress.IPv4Interface(c.address).ip))
            rogue_heard = [o for o in offers if o[0] == c.rogue.address]
            detail = (f"it heard the rogue ({heard})" if rogue_heard else
                      f"its node did not offer {want[1]}" + (f" (heard {heard})" if offers else "")
                      if want not in offers else f"it heard {heard}" if len(offers) > 1 else "")
            out.append(DhcpOutcome(c, offers == [want], detail))
    return out
