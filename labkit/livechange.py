"""How a running domain takes a changed definition without a restart (pure).

AHV changes a running VM in place: a disk is hot-added, a CD-ROM's ISO swapped, and a VM that
migrates keeps running on its new host. A lab's VM is one libvirt domain on one workstation; its
node is the bridges its NICs plug into. So two definitions whose core (render.core_digest: all
but the disks and the NICs' bridges) is the same differ in a way a running domain can take:

- disks only: plug the new ones in, take the gone ones out, swap a CD-ROM's medium (libvirt's
  hot-plug; IDE and SATA disks are not hot-pluggable, so a change there restarts the VM);
- NIC bridges only: a live migration to another node (virt.move_domain: the guest's memory and
  devices are saved and restored with the new bridges, its uptime and processes continue).

Anything else (memory, CPUs, a NIC added, both kinds at once) restarts the domain, as before.
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from . import readback
from .names import metadata_of

HOT_PLUGGABLE = ("scsi", "virtio", "usb")  # disk buses libvirt plugs into a running QEMU


@dataclass(frozen=True)
class LiveChange:
    xml: str  # the new definition, defined once the running domain has the change
    attach: tuple[str, ...] = ()  # disk elements to plug in
    detach: tuple[str, ...] = ()  # disk elements (as the host has them) to take out
    update: tuple[str, ...] = ()  # CD-ROMs with another medium
    moves: tuple[tuple[str, str], ...] = ()  # (MAC, bridge): each NIC's bridge on the new node
    node: str = ""

    def summary(self) -> str:
        if self.moves:
            return f"live migration to node {self.node}"
        parts = [f"+{_label(x)}" for x in self.attach] + [f"-{_label(x)}" for x in self.detach]
        parts += [f"~{_label(x)}" for x in self.update]
        return "live: " + ", ".join(parts)


def classify(have_xml: str, want_xml: str) -> LiveChange | None:
    """The live change from the host's definition to the wanted one, or None when only a restart
    brings it (or the two do not differ where a live change can)."""
    have_core, want_core = metadata_of(have_xml).get("core"), metadata_of(want_xml).get("core")
    if not have_core or have_core != want_core:
        return None
    have, want = readback.domain(have_xml), readback.domain(want_xml)
    have_bridges = {n.mac: n.source for n in have.nics}
    want_bridges = {n.mac: n.source for n in want.nics}
    moved = have_bridges != want_bridges
    if moved and have.disks == want.disks and set(have_bridges) == set(want_bridges):
        return LiveChange(want_xml, moves=tuple(sorted(want_bridges.items())), node=metadata_of(want_xml).get("node", ""))
    if moved or have.disks == want.disks:
        return None
    return _devices(have, want, have_xml, want_xml)


def _devices(have, want, have_xml: str, want_xml: str) -> LiveChange | None:
    have_disks, want_disks = {d.target: d for d in have.disks}, {d.target: d for d in want.disks}
    have_el, want_el = _disk_elements(have_xml), _disk_elements(want_xml)
    attach, detach, update = [], [], []
    for target in sorted(set(have_disks) | set(want_disks)):
        old, new = have_disks.get(target), want_disks.get(target)
        if old == new:
            continue
        if old is not None and new is not None and old.device == new.device == "cdrom" and old.bus == new.bus:
            update.append(want_el[target])  # a CD-ROM's medium: swapped in place, on any bus
            continue
        if any(d is not None and d.bus not in HOT_PLUGGABLE for d in (old, new)):
            return None
        if old is not None:
            detach.append(have_el[target])
        if new is not None:
            attach.append(want_el[target])
    return LiveChange(want_xml, tuple(attach), tuple(detach), tuple(update))


def _disk_elements(xml: str) -> dict[str, str]:
    root = etree.fromstring(xml.encode())
    out = {}
    for disk in root.findall("devices/disk"):
        target = disk.find("target")
        if target is not None:
            out[target.get("dev")] = etree.tostring(disk, encoding="unicode")
    return out


def _label(disk_xml: str) -> str:
    disk = etree.fromstring(disk_xml.encode())
    return f"{disk.get('device', 'disk')} {disk.find('target').get('dev')}"
