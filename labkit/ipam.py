"""AHV's IPAM for managed networks (pure): which address each NIC holds, and the DHCP server's.

A NIC on a managed network (one with `ip_config`) is bound to one address when it is created:
the one it requests (anywhere in the subnet, even outside the pool), else the next free address
of the pool. The binding lasts: a lab's effective topology records it, and a later change to the
topology keeps the address of every NIC that still exists (`assign(..., previous=...)`). An
address returns to the pool when its NIC or VM goes. Sources: shared/reference/ahv-ipam-api.md.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from .errors import LabkitError

if TYPE_CHECKING:
    from .topology import IpConfig, Topology

Address = ipaddress.IPv4Address


class IpamError(LabkitError):
    """A request IPAM cannot grant (pool exhausted, address taken or outside the subnet)."""


def dhcp_server(ipc: IpConfig) -> Address:
    """AHV's DHCP server address: the one set, else the last usable address of the network."""
    return ipc.dhcp_server or (ipc.network.broadcast_address - 1)


def pool_addresses(ipc: IpConfig) -> list[Address]:
    out: list[Address] = []
    for text in ipc.pool:
        start, end = (Address(part) for part in text.split())
        out += [Address(i) for i in range(int(start), int(end) + 1)]
    return out


def reserved(ipc: IpConfig) -> set[Address]:
    """Addresses no NIC gets: the network's own, its broadcast, the gateway, the DHCP server."""
    return {ipc.network.network_address, ipc.network.broadcast_address, ipc.gateway, dhcp_server(ipc)}


def assign(topo: Topology, previous: Topology | None = None) -> Topology:
    """`topo` with an address on every NIC of a managed network; raises IpamError when one cannot
    have one. `previous`: the lab's topology before this change, whose NICs keep their addresses."""
    managed = {n.name: n.ip_config for n in topo.networks if n.ip_config is not None}
    if not managed:
        return topo
    # A NIC is known by its MAC where it has one (NICs made in acli do: deleting one does not move
    # the others' addresses), else by its place in the VM.
    held: dict[tuple[str, int | str, str], ipaddress.IPv4Interface] = {}
    for vm in (previous.vms if previous else []):
        for index, nic in enumerate(vm.nics):
            if nic.network in managed and nic.ip is not None:
                held[(vm.name, nic.mac or index, nic.network)] = nic.ip
    taken = {name: reserved(ipc) | {nic.ip.ip for vm in topo.vms for nic in vm.nics if nic.network == name and nic.ip}
             for name, ipc in managed.items()}
    vms = []
    for vm in topo.vms:
        nics = []
        for index, nic in enumerate(vm.nics):
            if nic.network in managed and nic.ip is not None:  # requested: the network's prefix
                nic = nic.model_copy(update={"ip": ipaddress.IPv4Interface(
                    f"{nic.ip.ip}/{managed[nic.network].network.prefixlen}")})
            elif nic.network in managed:
                ipc = managed[nic.network]
                before = held.get((vm.name, nic.mac or index, nic.network))
                address = before.ip if before is not None and before.ip not in taken[nic.network] else \
                    next_free(nic.network, ipc, taken[nic.network])
                taken[nic.network].add(address)
                nic = nic.model_copy(update={"ip": ipaddress.IPv4Interface(f"{address}/{ipc.network.prefixlen}")})
            nics.append(nic)
        vms.append(vm.model_copy(update={"nics": nics}))
    return topo.model_copy(update={"vms": vms})


def next_free(network: str, ipc: IpConfig, taken: set[Address]) -> Address:
    pool = pool_addresses(ipc)
    if not pool:
        raise IpamError(f"managed network {network} has no DHCP pool; add one (net.add_dhcp_pool {network} "
                        f"start=A end=B) or request an address with ip=")
    for address in pool:
        if address not in taken:
            return address
    raise IpamError(f"the DHCP pool of network {network} is exhausted ({len(pool)} addresses, all assigned); "
                    f"add a range with net.add_dhcp_pool or delete a NIC")


def check_request(network: str, ipc: IpConfig | None, address: Address, taken: set[Address]) -> None:
    """A requested address, as acli's `ip=` asks for one (raises IpamError with AHV's words)."""
    if ipc is None:
        raise IpamError("Cannot assign IP address on an unmanaged network")
    if address not in ipc.network:
        raise IpamError(f"{address} is not in network {network} ({ipc.network}); request an address inside it")
    if address in reserved(ipc):
        raise IpamError(f"{address} is the gateway, the DHCP server or not a host address of {network}; request another")
    if address in taken:
        raise IpamError(f"{address} is already assigned in network {network}; request another or leave ip= out")


def free_count(ipc: IpConfig, taken: set[Address]) -> tuple[int, int]:
    """(free, total) addresses of the pool, as AHV's v2 `pool[].num_free_ips` / `num_total_ips`."""
    pool = pool_addresses(ipc)
    return sum(1 for a in pool if a not in taken), len(pool)
