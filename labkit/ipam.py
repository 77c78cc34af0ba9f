"""AHV's IPAM arithmetic for one managed network (pure): its pool, its reserved addresses, the
lowest free address, a requested address checked with AHV's words.

A managed network's values come from the topology (`topology.IpConfig`) or anything shaped like
it; this module imports neither the topology nor the ledger: the topology validates pools with
it, and the ledger (ledger.py: which NIC holds which address) hands addresses out with it. Pools
are walked lazily, range by range, and a managed network holds at most `MAX_ADDRESSES`.
Sources: shared/reference/ahv-ipam-api.md.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable, Iterator, Protocol

from .errors import LabkitError

Address = ipaddress.IPv4Address

# A lab's managed network is at most a /16: 65,536 addresses is more than a workstation's guests
# can use, and a pool that size is still walked in milliseconds.
MIN_PREFIX = 16
MAX_ADDRESSES = 1 << (32 - MIN_PREFIX)


class IpamError(LabkitError):
    """A request IPAM cannot grant (pool exhausted, address taken or outside the subnet)."""


class ManagedNetwork(Protocol):
    network: ipaddress.IPv4Network
    gateway: Address
    pool: list[str]
    dhcp_server: Address | None


def dhcp_server(ipc: ManagedNetwork) -> Address:
    """AHV's DHCP server address: the one set, else the last usable address of the network."""
    return ipc.dhcp_server or (ipc.network.broadcast_address - 1)


def parse_range(text: str) -> tuple[Address, Address]:
    """A pool range as AHV's v2 API writes it, "START END" (raises ValueError when it is not one)."""
    parts = text.split()
    if len(parts) != 2:
        raise ValueError(f"{text!r} is not a range")
    start, end = (Address(part) for part in parts)
    return start, end


def ranges(ipc: ManagedNetwork) -> list[tuple[Address, Address]]:
    """The pool's ranges, lowest first."""
    return sorted(parse_range(text) for text in ipc.pool)


def pool_size(ipc: ManagedNetwork) -> int:
    return sum(int(end) - int(start) + 1 for start, end in ranges(ipc))


def in_pool(ipc: ManagedNetwork, address: Address) -> bool:
    return any(start <= address <= end for start, end in ranges(ipc))


def reserved(ipc: ManagedNetwork) -> set[Address]:
    """Addresses no NIC gets: the network's own, its broadcast, the gateway, the DHCP server."""
    return {ipc.network.network_address, ipc.network.broadcast_address, ipc.gateway, dhcp_server(ipc)}


def free_addresses(ipc: ManagedNetwork, taken: set[Address]) -> Iterator[Address]:
    """The pool's free addresses, lowest first, one at a time (a pool is never listed whole)."""
    for start, end in ranges(ipc):
        for value in range(int(start), int(end) + 1):
            if (address := Address(value)) not in taken:
                yield address


def lowest_free(network: str, ipc: ManagedNetwork, taken: set[Address]) -> Address:
    if not ipc.pool:
        raise IpamError(f"managed network {network} has no DHCP pool; add one (net.add_dhcp_pool {network} "
                        f"start=A end=B) or request an address with ip=")
    for address in free_addresses(ipc, taken):
        return address
    raise IpamError(f"the DHCP pool of network {network} is exhausted ({pool_size(ipc)} addresses, all assigned); "
                    f"add a range with net.add_dhcp_pool or delete a NIC")


def check_request(network: str, ipc: ManagedNetwork | None, address: Address, taken: Iterable[Address]) -> None:
    """A requested address, as acli's `ip=` asks for one (raises IpamError with AHV's words)."""
    if ipc is None:
        raise IpamError("Cannot assign IP address on an unmanaged network")
    if address not in ipc.network:
        raise IpamError(f"{address} is not in network {network} ({ipc.network}); request an address inside it")
    if address in reserved(ipc):
        raise IpamError(f"{address} is the gateway, the DHCP server or not a host address of {network}; request another")
    if address in set(taken):
        raise IpamError(f"{address} is already assigned in network {network}; request another or leave ip= out")


def free_count(ipc: ManagedNetwork, taken: set[Address]) -> tuple[int, int]:
    """(free, total) addresses of the pool, as AHV's v2 `pool[].num_free_ips` / `num_total_ips`."""
    total = pool_size(ipc)
    return total - sum(1 for address in taken if in_pool(ipc, address)), total
