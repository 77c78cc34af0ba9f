"""Netlink adapter (pyroute2): namespaces, veth pairs, addresses, routes, link state.

Both ends of every veth carry the lab's marker as their alias (IFLA_IFALIAS,
`labkit:<lab>:...`), so `lab.down` finds them without the topology file.
Only lab namespaces are entered; the workstation's namespace only ever gets
the root-side ends of veths, with no address and no route.
"""

from __future__ import annotations

import contextlib
import ipaddress
from pathlib import Path

from pyroute2 import IPRoute, NetlinkError, NetNS, netns

from .. import names
from ..errors import HostError
from ..hoststate import SeenLink, SeenNetns
from ..model import Veth


@contextlib.contextmanager
def _ns(name: str | None):
    ipr = IPRoute() if name is None else NetNS(name)
    try:
        yield ipr
    finally:
        ipr.close()


def _index(ipr, ifname: str) -> int | None:
    found = ipr.link_lookup(ifname=ifname)
    return found[0] if found else None


def _read_links(ipr, namespace: str | None) -> list[SeenLink]:
    links = ipr.get_links()
    by_index = {link["index"]: link.get("ifname") for link in links}
    addresses: dict[int, list[str]] = {}
    for addr in ipr.get_addr(family=2):
        addresses.setdefault(addr["index"], []).append(f"{addr.get('address')}/{addr['prefixlen']}")
    out = []
    for link in links:
        name = link.get("ifname")
        if name == "lo":
            continue
        out.append(SeenLink(
            name, namespace, link.get("ifalias"), link.get(("linkinfo", "kind")) or "",
            up=bool(link["flags"] & 1), mtu=link.get("mtu") or 0,
            master=by_index.get(link.get("master")), addresses=tuple(sorted(addresses.get(link["index"], []))),
        ))
    return out


class Netlink:
    # observe ----------------------------------------------------------------

    def observe(self) -> tuple[tuple[SeenLink, ...], tuple[SeenNetns, ...]]:
        with _ns(None) as ipr:
            links = _read_links(ipr, None)
        namespaces = []
        for name in sorted(netns.listnetns()):
            if names.netns_lab(name) is None:
                namespaces.append(SeenNetns(name, None))  # foreign: never entered
                continue
            with _ns(name) as ipr:
                links += _read_links(ipr, name)
                routes = tuple(sorted(
                    ("default" if not r.get("dst") else f"{r.get('dst')}/{r['dst_len']}", r.get("gateway"))
                    for r in ipr.get_routes(family=2, table=254) if r.get("gateway")))
            namespaces.append(SeenNetns(name, names.netns_lab(name), routes))
        return tuple(links), tuple(namespaces)

    # namespaces -------------------------------------------------------------

    def create_netns(self, name: str) -> None:
        if name not in netns.listnetns():
            netns.create(name)
        with _ns(name) as ipr:
            ipr.link("set", index=_index(ipr, "lo"), state="up")

    def delete_netns(self, name: str) -> None:
        """Delete the namespace's links first: the kernel frees a dead namespace's veths
        asynchronously, and the root-side ends must be gone when this returns."""
        if name not in netns.listnetns():
            return
        with _ns(name) as ipr:
            for link in ipr.get_links():
                if link.get("ifname") != "lo":
                    with contextlib.suppress(NetlinkError):
                        ipr.link("del", index=link["index"])
        netns.remove(name)

    # veths --------------------------------------------------------------------

    def create_veth(self, veth: Veth) -> None:
        """(Re)create a pair: stale ends of an earlier try are removed first, so this converges."""
        self.delete_link(veth.peer, None)
        self.delete_link(veth.name, veth.netns)
        with _ns(None) as ipr:
            peer = {"ifname": veth.name}
            if veth.netns:
                peer["net_ns_fd"] = veth.netns  # created inside: its name may be taken in the root namespace
            try:
                ipr.link("add", ifname=veth.peer, kind="veth", peer=peer)
            except NetlinkError as exc:
                raise HostError(f"cannot create veth {veth.peer}/{veth.name} ({exc.args[1]}); "
                                f"check that no other interface holds these names") from None
        self.update_veth(veth)

    def update_veth(self, veth: Veth) -> None:
        """Alias, MTU, addresses (exactly the wanted ones) and link up, on both ends."""
        for namespace, name, addresses in ((None, veth.peer, ()), (veth.netns, veth.name, veth.addresses)):
            if namespace is None:
                self.disable_ipv6(name)
            with _ns(namespace) as ipr:
                index = _index(ipr, name)
                if index is None:
                    raise HostError(f"interface {name} vanished while configuring it; run lab.up again")
                ipr.link("set", index=index, ifalias=veth.alias, mtu=veth.mtu)
                have = {f"{a.get('address')}/{a['prefixlen']}" for a in ipr.get_addr(index=index, family=2)}
                for cidr in have - set(addresses):
                    iface = ipaddress.IPv4Interface(cidr)
                    ipr.addr("del", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen)
                for cidr in addresses:
                    if cidr not in have:
                        iface = ipaddress.IPv4Interface(cidr)
                        ipr.addr("add", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen)
                ipr.link("set", index=index, state="up")

    def attach(self, ifname: str, bridge: str) -> None:
        """Enslave a root-namespace link to a Linux bridge (the local network's)."""
        with _ns(None) as ipr:
            index, master = _index(ipr, ifname), _index(ipr, bridge)
            if index is None or master is None:
                raise HostError(f"cannot attach {ifname} to {bridge}: one of them does not exist; run lab.up again")
            ipr.link("set", index=index, master=master, state="up")

    def delete_link(self, name: str, namespace: str | None) -> None:
        if namespace and namespace not in netns.listnetns():
            return
        with _ns(namespace) as ipr:
            index = _index(ipr, name)
            if index is not None:
                with contextlib.suppress(NetlinkError):
                    ipr.link("del", index=index)

    @staticmethod
    def disable_ipv6(name: str) -> None:
        """No IPv6 on a lab link in the workstation's namespace: the kernel would give it a link-local
        address and route as soon as it is up, and labkit adds nothing there."""
        path = Path(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6")
        if path.exists():
            path.write_text("1\n")

    def carrier(self, name: str, namespace: str | None = None) -> bool:
        """Up and with carrier (a veth has none when its peer is down)."""
        with _ns(namespace) as ipr:
            index = _index(ipr, name)
            if index is None:
                return False
            link = ipr.get_links(index)[0]
            return bool(link["flags"] & 1) and bool(link.get("carrier"))

    def set_link_state(self, name: str, up: bool, namespace: str | None = None) -> None:
        with _ns(namespace) as ipr:
            index = _index(ipr, name)
            if index is None:
                raise HostError(f"interface {name} does not exist; check the name with `lab.status`")
            ipr.link("set", index=index, state="up" if up else "down")

    # routes -------------------------------------------------------------------

    def set_route(self, namespace: str, destination: str, gateway: str) -> None:
        with _ns(namespace) as ipr:
            ipr.route("replace", dst="0.0.0.0/0" if destination == "default" else destination, gateway=gateway)
