"""The IPAM ledger (pure): which NIC holds which address on the lab's managed networks.

A binding is state of its own, kept per lab beside the effective topology (state.py writes both
at once), and keyed by the NIC's MAC (nic_identity.py: given once, kept), never by position.
`assign` decides every binding of a topology from the ledger before it:

1. a requested address (the topology's `ip`: a file's, acli's `ip=`) is the NIC's;
2. every existing binding is honoured next, before anything new is handed out, if its NIC is
   still on the same network and the address is still in the pool and held by nothing else;
3. every other NIC gets the lowest free pool address.

Nothing the lab holds is handed out: host and CVM addresses, gateways, DHCP servers, static and
trunk addresses, requested ones. A binding that had to move (its subnet or pool changed, or its
address is now requested by another NIC) is named in `notes`, so the change says so.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from . import ipam, nic_identity

if TYPE_CHECKING:
    from .topology import Topology

Address = ipaddress.IPv4Address


@dataclass(frozen=True)
class Binding:
    mac: str
    vm: str
    network: str
    address: Address
    requested: bool = False  # the topology asked for this address (otherwise IPAM chose it from the pool)


@dataclass(frozen=True)
class Ledger:
    bindings: tuple[Binding, ...] = ()

    def of(self, mac: str) -> Binding | None:
        return self._by_mac.get(mac)

    def on(self, network: str) -> list[Binding]:
        return [b for b in self.bindings if b.network == network]

    @cached_property
    def _by_mac(self) -> dict[str, Binding]:
        return {b.mac: b for b in self.bindings}

    def to_json(self) -> str:
        return json.dumps({"version": 1, "bindings": [
            {"mac": b.mac, "vm": b.vm, "network": b.network, "address": str(b.address), "requested": b.requested}
            for b in self.bindings]}, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> "Ledger":
        raw = json.loads(text)
        return cls(tuple(Binding(b["mac"], b["vm"], b["network"], Address(b["address"]), bool(b["requested"]))
                         for b in raw["bindings"]))


@dataclass(frozen=True)
class Assigned:
    topo: Topology  # every NIC of a managed network with its address (what resolve builds from)
    ledger: Ledger
    notes: tuple[str, ...] = field(default=())  # bindings that moved, and why


def lab_addresses(topo: Topology) -> set[Address]:
    """Every address something in the lab holds, other than a NIC's pool binding."""
    held: set[Address] = set()
    for node in topo.nodes:
        held |= {node.host_ip.ip, node.cvm.ip.ip}
        if node.gateway is not None:
            held.add(node.gateway)
    held |= {gw.ip for gw in topo.switch.gateways.values()}
    for net in topo.networks:
        if net.ip_config is not None:
            held |= ipam.reserved(net.ip_config)
    for vm in topo.vms:
        for nic in vm.nics:
            if nic.ip is not None:
                held.add(nic.ip.ip)
            held |= {address.ip for address in nic.ips.values()}
    return held


def assign(topo: Topology, before: Ledger = Ledger()) -> Assigned:
    """Every NIC of a managed network bound to an address; raises ipam.IpamError when one cannot be."""
    topo = nic_identity.pin(topo)
    managed = {n.name: n.ip_config for n in topo.networks if n.ip_config is not None}
    if not managed and not before.bindings:
        return Assigned(topo, Ledger())
    taken = lab_addresses(topo)
    chosen: dict[str, tuple[Address, bool]] = {}  # MAC -> (address, requested)
    waiting = []
    for vm in topo.vms:
        for nic in vm.nics:
            if nic.network not in managed:
                continue
            if nic.ip is not None:
                chosen[nic.mac] = (nic.ip.ip, True)
            else:
                waiting.append((vm, nic))
    moved: dict[str, str] = {}
    for vm, nic in waiting:  # bindings before anything new: a new NIC never takes a bound address
        old = before.of(nic.mac)
        if old is None or old.network != nic.network:
            continue
        ipc = managed[nic.network]
        if old.address in taken:
            moved[nic.mac] = "now held by something else in the lab" if not old.requested else "no longer requested"
        elif old.address not in ipc.network:
            moved[nic.mac] = f"the subnet is now {ipc.network}"
        elif not ipam.in_pool(ipc, old.address):
            moved[nic.mac] = "outside the pool now" if not old.requested else "no longer requested"
        else:
            chosen[nic.mac] = (old.address, False)
            taken.add(old.address)
    notes = []
    for vm, nic in waiting:
        if nic.mac in chosen:
            continue
        address = ipam.lowest_free(nic.network, managed[nic.network], taken)
        chosen[nic.mac] = (address, False)
        taken.add(address)
        if nic.mac in moved:
            notes.append(f"VM {vm.name}'s NIC {nic.mac} on network {nic.network}: {before.of(nic.mac).address} -> "
                         f"{address} ({moved[nic.mac]})")
    bindings, vms = [], []
    for vm in topo.vms:
        nics = []
        for nic in vm.nics:
            if nic.mac in chosen and nic.network in managed:
                address, requested = chosen[nic.mac]
                bindings.append(Binding(nic.mac, vm.name, nic.network, address, requested))
                if not requested:
                    prefix = managed[nic.network].network.prefixlen
                    nic = nic.model_copy(update={"ip": ipaddress.IPv4Interface(f"{address}/{prefix}")})
                elif nic.ip.network.prefixlen != managed[nic.network].network.prefixlen:  # the network's prefix
                    nic = nic.model_copy(update={"ip": ipaddress.IPv4Interface(
                        f"{nic.ip.ip}/{managed[nic.network].network.prefixlen}")})
            nics.append(nic)
        vms.append(vm.model_copy(update={"nics": nics}))
    return Assigned(topo.model_copy(update={"vms": vms}), Ledger(tuple(bindings)), tuple(notes))
