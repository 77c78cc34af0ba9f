"""Netlink adapter (pyroute2): namespaces, veth pairs, addresses, routes, link state.

Both ends of every veth carry the lab's marker as their alias (IFLA_IFALIAS,
`labkit:<lab>:...`), so `lab.down` finds them without the topology file.
Only lab namespaces are entered; the workstation's namespace only ever gets
the root-side ends of veths, with no address and no route.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from pathlib import Path

from pyroute2 import IPRoute, NetlinkError, netns

from .. import names
from ..errors import HostError
from ..hoststate import SeenLink, SeenNetns
from ..impair import from_qdisc
from ..model import LinuxBridge, Veth
from . import Connection
from .netns import entered

DELETE_GROUP_BASE = 0x4C4B0000  # device groups for batched deletes: this plus a process id, never shared


def _index(ipr, ifname: str) -> int | None:
    found = ipr.link_lookup(ifname=ifname)
    return found[0] if found else None


def _impairments(ipr) -> dict[int, str]:
    """ifindex -> the impairment its root netem or tbf qdisc makes (one dump for the namespace)."""
    from pyroute2.netlink.rtnl.tcmsg.common import tick_in_usec

    out = {}
    for qdisc in ipr.get_qdiscs():
        kind = qdisc.get_attr("TCA_KIND")
        if qdisc["parent"] == 0xFFFFFFFF and kind in ("netem", "tbf"):
            out[qdisc["index"]] = str(from_qdisc(kind, _qdisc_options(kind, qdisc.get_attr("TCA_OPTIONS")), tick_in_usec))
    return out


def _qdisc_options(kind: str, opts) -> dict:
    if kind == "tbf":
        return {"rate": opts.get_attr("TCA_TBF_PARMS")["rate"]}
    flat = {k: opts[k] for k in ("delay", "jitter", "loss", "duplicate")}
    corrupt, rate = opts.get_attr("TCA_NETEM_CORRUPT"), opts.get_attr("TCA_NETEM_RATE")
    flat["corrupt"] = corrupt["prob_corrupt"] if corrupt else 0
    flat["rate"] = rate["rate"] if rate else 0
    return flat


def _read_links(ipr, namespace: str | None) -> list[SeenLink]:
    links = ipr.get_links()
    impaired = _impairments(ipr) if namespace is None else {}  # lab.up impairs uplinks, all in this namespace
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
            index=link["index"], peer_index=link.get("link") or 0, impairment=impaired.get(link["index"], ""),
        ))
    return out


def _delete_root_qdisc(ipr, index: int) -> None:
    """The link's root qdisc removed, whatever its kind (the link goes back to its default)."""
    ipr.tc("del", index=index, handle=0x10000, parent=0xFFFFFFFF)


class Netlink(Connection):
    """One netlink socket per namespace, opened on first use and kept for the command: a socket
    made inside a namespace stays there, so nothing is re-entered per call."""

    def __init__(self):
        self._sockets: dict[str | None, IPRoute] = {}
        self._ethtool: dict[str, object] = {}

    def close(self) -> None:
        for ipr in self._sockets.values():
            ipr.close()
        self._sockets.clear()
        for tool in self._ethtool.values():
            tool.close()
        self._ethtool.clear()

    def _ipr(self, namespace: str | None) -> IPRoute:
        ipr = self._sockets.get(namespace)
        if ipr is None:
            if namespace is None:
                ipr = IPRoute()
            else:
                try:
                    with entered(namespace):
                        ipr = IPRoute()
                except FileNotFoundError:
                    raise HostError(f"namespace {namespace} vanished while labkit was using it; run the command again") from None
            self._sockets[namespace] = ipr
        return ipr

    def _forget(self, namespace: str) -> None:
        for cache in (self._sockets, self._ethtool):
            held = cache.pop(namespace, None)
            if held is not None:
                held.close()

    # observe ----------------------------------------------------------------

    def observe(self) -> tuple[tuple[SeenLink, ...], tuple[SeenNetns, ...]]:
        links = _read_links(self._ipr(None), None)
        namespaces = []
        for name in sorted(netns.listnetns()):
            if names.netns_lab(name) is None:
                namespaces.append(SeenNetns(name, None))  # foreign: never entered
                continue
            try:
                ipr = self._ipr(name)
                ns_links = _read_links(ipr, name)
                routes = tuple(sorted(
                    ("default" if not r.get("dst") else f"{r.get('dst')}/{r['dst_len']}", r.get("gateway"))
                    for r in ipr.get_routes(family=2, table=254) if r.get("gateway")))
            except HostError:
                continue  # deleted since listnetns(): not there
            links += ns_links
            namespaces.append(SeenNetns(name, names.netns_lab(name), routes))
        return tuple(links), tuple(namespaces)

    # namespaces -------------------------------------------------------------

    def create_netns(self, name: str) -> None:
        if name not in netns.listnetns():
            netns.create(name)
        ipr = self._ipr(name)
        ipr.link("set", index=_index(ipr, "lo"), state="up")

    def delete_netns(self, name: str) -> None:
        """Delete the namespace's links first: the kernel frees a dead namespace's veths
        asynchronously, and the root-side ends must be gone when this returns."""
        if name not in netns.listnetns():
            return
        ipr = self._ipr(name)
        self._delete_indexes(ipr, [link["index"] for link in ipr.get_links() if link.get("ifname") != "lo"])
        self._forget(name)
        netns.remove(name)

    # veths --------------------------------------------------------------------

    def create_veth(self, veth: Veth, earlier_tries: frozenset[str] = frozenset()) -> None:
        """(Re)create a pair: stale ends of an earlier try are removed first, so this converges.
        A stale end is removed only if it is the lab's: marked as its, or unmarked and named in
        `earlier_tries` (the lab's intents before this one). Anything else took the name after the
        plan looked (another lab's lab.up, a user): it is left alone and the lab.up stops."""
        lab = names.link_lab(veth.alias)
        for name, namespace in ((veth.peer, None), (veth.name, veth.netns)):
            if namespace and namespace not in netns.listnetns():
                continue
            ipr = self._ipr(namespace)
            index = _index(ipr, name)
            if index is None:
                continue
            owner = names.link_lab(ipr.get_links(index)[0].get("ifalias"))
            if owner != lab and not (owner is None and name in earlier_tries):
                held_by = f"lab {owner}" if owner else "something that is not labkit's"
                raise HostError(f"interface {name} was taken by {held_by} after this lab.up looked; "
                                f"run lab.up again to choose another name")
            self._delete_indexes(ipr, [index])
        ipr = self._ipr(None)
        peer = {"ifname": veth.name}
        if veth.netns:
            peer["net_ns_fd"] = veth.netns  # created inside: its name may be taken in the root namespace
            # Its MAC from its marker: the same each time it is made, so guests' ARP caches stay right
            # when a lab is made again around them (lab.restore of a lab that was down).
            peer["address"] = names.stable_mac(veth.alias, veth.name)
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
            ipr = self._ipr(namespace)
            index = _index(ipr, name)
            if index is None:
                raise HostError(f"interface {name} vanished while configuring it; run lab.up again")
            ipr.link("set", index=index, ifalias=veth.alias, mtu=veth.mtu)
            if namespace is not None:
                self._checksum_in_software(namespace, name)
            have = {f"{a.get('address')}/{a['prefixlen']}" for a in ipr.get_addr(index=index, family=2)}
            for cidr in have - set(addresses):
                iface = ipaddress.IPv4Interface(cidr)
                ipr.addr("del", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen)
            for cidr in addresses:
                if cidr not in have:
                    iface = ipaddress.IPv4Interface(cidr)
                    ipr.addr("add", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen)
            ipr.link("set", index=index, state="down" if name in veth.down else "up")

    def _checksum_in_software(self, namespace: str, name: str) -> None:
        """No TX checksum offload (nor the segmentation offloads that need it) on a namespace's end:
        its packets cross the veth to OVS's userspace datapath, which forwards them to guests as
        they are, and a UDP or TCP checksum left for a NIC to fill in reaches the guest unfilled
        (a guest's DHCP client drops such an offer)."""
        from pyroute2.ethtool.ioctl import IoctlEthtool

        tool = self._ethtool.get(namespace)
        if tool is None:
            with entered(namespace):
                tool = self._ethtool[namespace] = IoctlEthtool()  # its socket stays in the namespace
        tool.change_ifname(name)
        tool.set_offload_flag("tx-checksumming", 0)

    def create_bridge(self, bridge: LinuxBridge) -> None:
        """A Linux bridge in the workstation's namespace, without STP, marked, up, with no IPv6
        (converges: an existing one of the lab's is only marked and brought up)."""
        ipr = self._ipr(None)
        if _index(ipr, bridge.name) is None:
            try:
                ipr.link("add", ifname=bridge.name, kind="bridge", br_stp_state=0, br_forward_delay=0)
            except NetlinkError as exc:
                raise HostError(f"cannot create bridge {bridge.name} ({exc.args[1]}); check that no other interface "
                                f"holds this name") from None
        self.disable_ipv6(bridge.name)
        ipr.link("set", index=_index(ipr, bridge.name), ifalias=bridge.alias, state="up")

    def attach(self, ifname: str, bridge: str) -> None:
        """Enslave a root-namespace link to a Linux bridge (the local network's)."""
        ipr = self._ipr(None)
        index, master = _index(ipr, ifname), _index(ipr, bridge)
        if index is None or master is None:
            raise HostError(f"cannot attach {ifname} to {bridge}: one of them does not exist; run lab.up again")
        ipr.link("set", index=index, master=master, state="up")

    def delete_link(self, name: str, namespace: str | None) -> None:
        self.delete_links([name], namespace)

    def delete_links(self, names: list[str], namespace: str | None) -> None:
        """Delete links of one namespace at once (a veth's peer goes with it); missing ones are fine."""
        if namespace and namespace not in netns.listnetns():
            return
        ipr = self._ipr(namespace)
        self._delete_indexes(ipr, [i for i in (_index(ipr, name) for name in names) if i is not None])

    @staticmethod
    def _delete_indexes(ipr, indexes: list[int]) -> None:
        """The kernel waits for an RCU grace period per deleted link, but once for a device group:
        the links join a group of this process's own and the group is deleted in one request."""
        if len(indexes) < 2:
            for index in indexes:
                with contextlib.suppress(NetlinkError):
                    ipr.link("del", index=index)
            return
        group = DELETE_GROUP_BASE + os.getpid()
        for index in indexes:
            with contextlib.suppress(NetlinkError):  # gone already
                ipr.link("set", index=index, group=group)
        ipr.link("del", index=0, group=group)

    @staticmethod
    def disable_ipv6(name: str) -> None:
        """No IPv6 on a lab link in the workstation's namespace: the kernel would give it a link-local
        address and route as soon as it is up, and labkit adds nothing there."""
        path = Path(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6")
        if path.exists():
            path.write_text("1\n")

    def carrier(self, name: str, namespace: str | None = None) -> bool:
        """Up and with carrier (a veth has none when its peer is down)."""
        ipr = self._ipr(namespace)
        index = _index(ipr, name)
        if index is None:
            return False
        link = ipr.get_links(index)[0]
        return bool(link["flags"] & 1) and bool(link.get("carrier"))

    def set_link_state(self, name: str, up: bool, namespace: str | None = None) -> None:
        ipr = self._ipr(namespace)
        index = _index(ipr, name)
        if index is None:
            raise HostError(f"interface {name} does not exist; check the name with `lab.status`")
        ipr.link("set", index=index, state="up" if up else "down")

    # impairments (tc netem, tbf) -------------------------------------------------

    def set_qdisc(self, name: str, namespace: str | None, kind: str, params: dict) -> None:
        """The link's egress through `kind` (netem or tbf), replacing its root qdisc: lab.impair."""
        ipr = self._ipr(namespace)
        index = self._existing(ipr, name)
        current = self.qdisc_of(name, namespace)
        try:
            if current is not None and current[0] != kind:
                _delete_root_qdisc(ipr, index)
            ipr.tc("replace", kind, index, 0x10000, **params)
        except NetlinkError as exc:
            if exc.code == 2 and kind == "netem":  # ENOENT: the kernel knows no such qdisc
                raise HostError("this kernel has no netem (CONFIG_NET_SCH_NETEM; `modprobe sch_netem` where it is a "
                                "module): --delay, --jitter, --loss, --duplicate and --corrupt cannot be applied on "
                                "this host; --rate alone can (tbf)") from None
            raise HostError(f"the kernel refuses {kind} on {name} ({os.strerror(exc.code)})") from None

    def clear_qdisc(self, name: str, namespace: str | None) -> bool:
        """Back to the link's default queueing; False when it had no impairment."""
        ipr = self._ipr(namespace)
        index = self._existing(ipr, name)
        current = self.qdisc_of(name, namespace)
        if current is None:
            return False
        _delete_root_qdisc(ipr, index)
        return True

    def qdisc_of(self, name: str, namespace: str | None) -> tuple[str, dict] | None:
        """The link's root netem or tbf qdisc and its options (netem: delay and jitter in ticks,
        percents on the kernel's u32 scale, rate in bytes a second, corrupt; tbf: rate), or None."""
        ipr = self._ipr(namespace)
        index = _index(ipr, name)
        if index is None:
            return None
        for qdisc in ipr.get_qdiscs(index=index):
            kind = qdisc.get_attr("TCA_KIND")
            if qdisc["parent"] != 0xFFFFFFFF or kind not in ("netem", "tbf"):
                continue
            return kind, _qdisc_options(kind, qdisc.get_attr("TCA_OPTIONS"))
        return None

    @staticmethod
    def _existing(ipr, name: str) -> int:
        index = _index(ipr, name)
        if index is None:
            raise HostError(f"interface {name} does not exist; is the lab up? (lab.status)")
        return index

    # routes -------------------------------------------------------------------

    def set_route(self, namespace: str, destination: str, gateway: str) -> None:
        ipr = self._ipr(namespace)
        ipr.route("replace", dst="0.0.0.0/0" if destination == "default" else destination, gateway=gateway)
