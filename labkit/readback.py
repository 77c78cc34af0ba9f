"""What matters of a libvirt definition, read back into typed fields (pure), as virtinst reads its
XML: the plan compares these between the host's definition and the one rendered, so a `virsh
edit` that keeps labkit's <metadata> (and its digest) is still seen and repaired."""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

_KIB = {"b": 1 / 1024, "bytes": 1 / 1024, "k": 1, "kib": 1, "kb": 1000 / 1024, "m": 1024, "mib": 1024,
        "mb": 1000 ** 2 / 1024, "g": 1024 ** 2, "gib": 1024 ** 2, "gb": 1000 ** 3 / 1024}


@dataclass(frozen=True)
class NicFacts:
    mac: str
    source: str  # bridge or network
    vlans: tuple[int, ...] = ()
    trunk: bool = False
    native: int | None = None

    def __str__(self) -> str:
        if not self.vlans:
            return f"{self.mac} on {self.source} untagged"
        kind = "trunk" if self.trunk else "VLAN"
        native = f" native {self.native}" if self.native is not None else ""
        return f"{self.mac} on {self.source} {kind} {','.join(map(str, self.vlans))}{native}"


@dataclass(frozen=True)
class DiskFacts:
    target: str
    device: str  # disk, cdrom
    bus: str
    source: str | None  # its file; None: an empty CD-ROM
    readonly: bool = False

    def __str__(self) -> str:
        return f"{self.device} {self.target} ({self.bus}) {self.source or 'empty'}"


@dataclass(frozen=True)
class DomainFacts:
    memory_kib: int
    vcpus: int
    nics: tuple[NicFacts, ...]
    disks: tuple[DiskFacts, ...] = ()


@dataclass(frozen=True)
class NetworkFacts:
    bridge: str
    portgroups: tuple[tuple[str, int | None], ...]  # (name, VLAN)


def domain(xml: str) -> DomainFacts:
    root = etree.fromstring(xml.encode())
    memory = root.find("memory")
    unit = (memory.get("unit") or "KiB").lower() if memory is not None else "kib"
    kib = int(int(memory.text) * _KIB.get(unit, 1)) if memory is not None else 0
    nics = []
    for iface in root.findall("devices/interface"):
        source = iface.find("source")
        vlan = iface.find("vlan")
        tags = tuple(int(t.get("id")) for t in vlan.findall("tag")) if vlan is not None else ()
        native = next((int(t.get("id")) for t in vlan.findall("tag") if t.get("nativeMode")), None) if vlan is not None else None
        nics.append(NicFacts(
            (iface.find("mac").get("address") if iface.find("mac") is not None else "").lower(),
            (source.get("bridge") or source.get("network") or "") if source is not None else "",
            tuple(sorted(tags)), vlan is not None and vlan.get("trunk") == "yes", native))
    disks = []
    for disk in root.findall("devices/disk"):
        target, source = disk.find("target"), disk.find("source")
        disks.append(DiskFacts(target.get("dev", "") if target is not None else "", disk.get("device", "disk"),
                               target.get("bus", "") if target is not None else "",
                               source.get("file") if source is not None else None, disk.find("readonly") is not None))
    return DomainFacts(kib, int(root.findtext("vcpu") or 0), tuple(sorted(nics, key=lambda n: n.mac)),
                       tuple(sorted(disks, key=lambda d: d.target)))


def network(xml: str) -> NetworkFacts:
    root = etree.fromstring(xml.encode())
    bridge = root.find("bridge")
    groups = []
    for group in root.findall("portgroup"):
        tag = group.find("vlan/tag")
        groups.append((group.get("name"), int(tag.get("id")) if tag is not None else None))
    return NetworkFacts(bridge.get("name", "") if bridge is not None else "", tuple(sorted(groups, key=lambda g: g[0])))


def domain_from_dict(d: dict | None) -> DomainFacts | None:
    """From the JSON of a recorded host state (HostState.to_json)."""
    if d is None:
        return None
    return DomainFacts(d["memory_kib"], d["vcpus"], tuple(NicFacts(**{**n, "vlans": tuple(n["vlans"])}) for n in d["nics"]),
                       tuple(DiskFacts(**k) for k in d.get("disks", ())))


def network_from_dict(d: dict | None) -> NetworkFacts | None:
    return None if d is None else NetworkFacts(d["bridge"], tuple(tuple(g) for g in d["portgroups"]))


def differences(have, want) -> list[str]:
    """What differs between two read-backs, as `field: host value, want wanted value` phrases."""
    out = []
    if isinstance(have, DomainFacts):
        if have.memory_kib != want.memory_kib:
            out.append(f"memory {have.memory_kib // 1024} MiB, want {want.memory_kib // 1024} MiB")
        if have.vcpus != want.vcpus:
            out.append(f"{have.vcpus} vCPUs, want {want.vcpus}")
        if have.nics != want.nics:
            wanted = {n.mac: n for n in want.nics}
            for nic in have.nics:
                if wanted.get(nic.mac) != nic:
                    out.append(f"NIC {nic}, want {wanted[nic.mac] if nic.mac in wanted else 'none'}")
            out += [f"no NIC {n}" for n in want.nics if n.mac not in {h.mac for h in have.nics}]
        if have.disks != want.disks:
            wanted = {d.target: d for d in want.disks}
            for disk in have.disks:
                if wanted.get(disk.target) != disk:
                    out.append(f"disk {disk}, want {wanted[disk.target] if disk.target in wanted else 'none'}")
            out += [f"no disk {d}" for d in want.disks if d.target not in {h.target for h in have.disks}]
    else:
        if have.bridge != want.bridge:
            out.append(f"bridge {have.bridge}, want {want.bridge}")
        if have.portgroups != want.portgroups:
            out.append(f"portgroups {_groups(have.portgroups)}, want {_groups(want.portgroups)}")
    return out


def _groups(groups) -> str:
    return ", ".join(f"{name}" + (f" (VLAN {vlan})" if vlan is not None else "") for name, vlan in groups) or "none"
