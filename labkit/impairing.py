"""lab.impair and lab.flap on a running lab: tc netem (or tbf, for a rate alone) on the interfaces a
place names (where.py),
and the impairments the lab's interfaces have now (for --list and lab.status).

An impairment is the kernel's state of a link, like a link taken down with lab.link-down: it
lasts until --clear, lab.down (the link goes) or a reboot of the workstation.
"""

from __future__ import annotations

import time

from . import state, where
from .impair import Impairment, from_qdisc
from .pipeline import resolved_on


def _running_taps(host) -> dict[str, tuple[str, ...]]:
    return {d.name: d.ifnames for d in host.domains if d.active}


def impair(path: str | None, place: str, impairment: Impairment | None, reading=None) -> where.Tap:
    """Impair (None: clear) the egress of every interface `place` names; returns them."""
    from .host.netlink import Netlink

    lab, host = resolved_on(path, reading)
    tap = where.locate(lab, place, _running_taps(host))
    with Netlink() as netlink:
        for ifname in tap.ifnames:
            if impairment is None:
                netlink.clear_qdisc(ifname, tap.netns)
            else:
                netlink.set_qdisc(ifname, tap.netns, *impairment.qdisc())
    state.bump_generation()
    return tap


def places(lab, taps: dict[str, tuple[str, ...]]) -> list[where.Tap]:
    """Every place of the lab an impairment can be on, one interface each, by its user-facing name."""
    out = []
    for node in lab.node_names:
        for uplink, veth in lab.uplinks(node).items():
            out.append(where.Tap(f"{node}/{uplink}", None, (veth.peer,), True))
            out.append(where.Tap(f"{_switch_of(lab, veth.name)}/{veth.name}", None, (veth.name,), True))
    for veth in lab.veths:
        if veth.purpose in ("host", "local") and veth.netns:
            node = next((ns.node for ns in lab.namespaces if ns.name == veth.netns), None)
            out.append(where.Tap(f"{node}/{veth.name}", veth.netns, (veth.name,), False))
    for dom in lab.domains:
        for i, ifname in enumerate(taps.get(dom.name, ())):
            out.append(where.Tap(f"{dom.ahv_name}/{i}", None, (ifname,), False))
    return out


def _switch_of(lab, port: str) -> str:
    switches = [b for b in lab.bridges if b.role == "tor"]
    for index, bridge in enumerate(switches):
        if any(p.name == port for p in bridge.ports):
            return "tor" if index == 0 else "tor-b"
    return "tor"


def listed(path: str | None, reading=None) -> list[tuple[str, str, Impairment]]:
    """(place, interface, impairment) for every impaired interface of the lab."""
    return listed_on(*resolved_on(path, reading))


def listed_on(lab, host) -> list[tuple[str, str, Impairment]]:
    from pyroute2.netlink.rtnl.tcmsg.common import tick_in_usec

    from .host.netlink import Netlink

    found = []
    with Netlink() as netlink:
        for tap in places(lab, _running_taps(host)):
            seen = netlink.qdisc_of(tap.ifnames[0], tap.netns)
            if seen is not None:
                found.append((tap.label, tap.ifnames[0], from_qdisc(*seen, tick_in_usec)))
    return found


def flap(path: str | None, place: str, period: float, count: int | None, say=print) -> None:
    """The place's links down and up, `count` times (None: until Ctrl-C), one cycle a period; they
    are left up however it ends, Ctrl-C included."""
    from .host.netlink import Netlink

    lab, host = resolved_on(path)
    tap = where.locate(lab, place, _running_taps(host))
    done = 0
    with Netlink() as netlink:
        try:
            while count is None or done < count:
                for ifname in tap.ifnames:
                    netlink.set_link_state(ifname, False, tap.netns)
                state.bump_generation()
                say(f"{tap.label} down ({done + 1}{'/' + str(count) if count else ''})")
                time.sleep(period / 2)
                for ifname in tap.ifnames:
                    netlink.set_link_state(ifname, True, tap.netns)
                say(f"{tap.label} up")
                done += 1
                if count is None or done < count:
                    time.sleep(period / 2)
        finally:
            for ifname in tap.ifnames:
                netlink.set_link_state(ifname, True, tap.netns)
            state.bump_generation()
