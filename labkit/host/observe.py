"""Observe: the host's state as the three adapters see it, in one HostState."""

from __future__ import annotations

from ..hoststate import HostState
from .netlink import Netlink
from .ovs import Ovs
from .virt import Virt


def observe(ovs: Ovs, netlink: Netlink, virt: Virt, datapath_type: str) -> HostState:
    bridges = ovs.observe()
    links, namespaces = netlink.observe()
    networks, domains = virt.observe()
    return HostState(bridges, links, namespaces, networks, domains, datapath_type)
