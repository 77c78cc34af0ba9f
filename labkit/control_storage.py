"""The control plane's images and disks (pure): AHV's image service and vmdisks, as records for
acli and the API, and the changes that make, grow, swap and delete them.

A lab has one storage container (names.container_name: default-container-<14 digits>, as AHV
names the one it makes); `container=default` and `container=default-container` name it too, as
workshop scripts write them. An image is a file of the workstation's copied into the container;
what it is (format, size, bootable) is probed where the command runs (acli_shell, the API) and
handed in here. A disk is blank, a copy-on-write clone of an image, a full copy of another
vmdisk, or a CD-ROM (empty, or holding an ISO image).
"""

from __future__ import annotations

from dataclasses import dataclass

from typing import TYPE_CHECKING

from . import names
from .control_base import ControlError, _build, _mac
from .topology import BUS_SLOTS, Disk, Image
from .values import echo, size_text

if TYPE_CHECKING:
    from .control import Change

CONTAINER_ALIASES = ("default", "default-container")


@dataclass(frozen=True)
class ImageFacts:
    format: str
    size: int
    bootable: bool


@dataclass(frozen=True)
class ImageRecord:
    name: str
    uuid: str
    vmdisk_uuid: str
    type: str  # kDiskImage, kIsoImage
    size: int
    container: str
    container_uuid: str
    source: str
    annotation: str = ""
    logical_timestamp: int = 1

    def v2(self) -> dict:
        return {"uuid": self.uuid, "name": self.name, "annotation": self.annotation, "image_type":
                "DISK_IMAGE" if self.type == "kDiskImage" else "ISO_IMAGE", "image_state": "ACTIVE",
                "vm_disk_id": self.vmdisk_uuid, "vm_disk_size": self.size, "storage_container_uuid": self.container_uuid,
                "storage_container_name": self.container, "logical_timestamp": self.logical_timestamp}


@dataclass(frozen=True)
class DiskRecord:
    vm: str
    bus: str
    index: int
    uuid: str  # the vmdisk's
    device_uuid: str
    cdrom: bool
    empty: bool
    size: int
    container: str
    container_uuid: str
    image: str | None = None  # the image it was cloned from (a CD-ROM: the ISO it holds)
    source_vmdisk_uuid: str | None = None

    @property
    def address(self) -> str:
        return f"{self.bus}.{self.index}"

    def v2(self) -> dict:
        return {"disk_address": {"device_bus": self.bus, "device_index": self.index, "vmdisk_uuid": self.uuid,
                                 "device_uuid": self.device_uuid, "disk_label": self.address},
                "is_cdrom": self.cdrom, "is_empty": self.empty, "size": self.size,
                "storage_container_uuid": None if self.empty else self.container_uuid,
                "source_disk_address": {"vmdisk_uuid": self.source_vmdisk_uuid} if self.source_vmdisk_uuid else None}


class StorageControl:
    """Control's images and disks (mixed into control.Control: self.topo, self._change, self.vm)."""

    # reading ---------------------------------------------------------------

    @property
    def container(self) -> str:
        return names.container_name(self.topo.name)

    @property
    def container_uuid(self) -> str:
        return names.uuid_for(self.topo.name, "container", self.container)

    def containers(self) -> list[dict]:
        used = sum(d.size for vm in self.vms() for d in self.disks(vm.name) if not d.empty and not d.cdrom)
        return [{"name": self.container, "uuid": self.container_uuid, "vmdisk_count": sum(
            1 for vm in self.topo.vms for d in vm.disks if not d.cdrom), "provisioned_bytes": used}]

    def check_container(self, ref: str | None) -> None:
        if ref is not None and ref not in (self.container, self.container_uuid, *CONTAINER_ALIASES):
            raise ControlError(f"container {echo(ref)} does not exist; this lab's container is {self.container} "
                               f"(container=default names it too)")

    def images(self) -> list[ImageRecord]:
        return [self._image_record(im) for im in self.topo.images]

    def image(self, ref: str) -> ImageRecord:
        for im in self.topo.images:
            if ref in (im.name, im.uuid):
                return self._image_record(im)
        known = ", ".join(im.name for im in self.topo.images) or "none yet"
        raise ControlError(f"image {echo(ref)} does not exist; images: {known}")

    def _image_record(self, im: Image) -> ImageRecord:
        return ImageRecord(im.name, im.uuid, im.vmdisk_uuid, "kDiskImage" if im.type == "disk" else "kIsoImage",
                           im.size or 0, self.container, self.container_uuid, im.source, im.annotation,
                           self.timestamps.get(f"image:{im.uuid}", 1))

    def disks(self, vm_ref: str) -> list[DiskRecord]:
        return self._disk_records(self._spec(vm_ref))

    def _disk_records(self, vm) -> list[DiskRecord]:
        images = {im.name: im for im in self.topo.images}
        out = []
        for disk in vm.disks:
            image = images.get(disk.image) if disk.image else None
            size = disk.size or (image.size if image else 0) or 0
            out.append(DiskRecord(vm.name, disk.bus, disk.index, disk.uuid,
                                  names.uuid_for(self.topo.name, "device", disk.uuid), disk.cdrom,
                                  disk.cdrom and image is None, size, self.container, self.container_uuid,
                                  disk.image, image.vmdisk_uuid if image else disk.clone_of))
        return out

    def disk(self, vm_ref: str, address: str) -> DiskRecord:
        found = self.disks(vm_ref)
        for disk in found:
            if disk.address == address:
                return disk
        raise ControlError(f"VM {self._spec(vm_ref).name} has no disk at {echo(address)}; its disks: "
                           f"{', '.join(d.address for d in found) or 'none'}")

    def boot_device(self, vm_ref: str) -> dict:
        return self._boot(self._spec(vm_ref))

    @staticmethod
    def _boot(vm) -> dict:
        """AHV's boot config: the device it boots (a disk's address or a NIC's MAC) and uefi_boot."""
        boot = vm.boot or next((d.address for d in vm.disks if not d.cdrom), None)
        out: dict = {"uefi_boot": vm.uefi}
        if boot and ":" in boot:
            out["boot_device"] = {"mac_addr": boot}
        elif boot:
            bus, index = boot.split(".")
            out["boot_device"] = {"disk_addr": {"bus": bus, "index": int(index)}}
        return out

    def _spec(self, ref: str):
        name = self.vm(ref).name
        return next(vm for vm in self.topo.vms if vm.name == name)

    # images ----------------------------------------------------------------

    def image_create(self, name: str, source: str, image_type: str, facts: ImageFacts, container: str | None = None,
                     annotation: str = "") -> Change:
        self.check_container(container)
        if any(im.name == name for im in self.topo.images):
            raise ControlError(f"image {name} already exists; choose another name or image.delete it first")
        kind = {"kDiskImage": "disk", "kIsoImage": "iso"}.get(image_type)
        if kind is None:
            raise ControlError(f"image_type={echo(image_type)} is not kDiskImage or kIsoImage")
        if kind == "iso" and facts.format != "raw":
            raise ControlError(f"{source} is a {facts.format} disk image, not an ISO; give image_type=kDiskImage")
        image = _build(Image, name=name, source=source, type=kind, size=facts.size, format=facts.format,
                       bootable=facts.bootable, annotation=annotation,
                       uuid=names.uuid_for(self.topo.name, "image", name, source, str(facts.size)),
                       vmdisk_uuid=names.uuid_for(self.topo.name, "image-vmdisk", name, source, str(facts.size)))
        return self._change("image.create", {"images": [*self.topo.images, image]}, touched=(f"image:{image.uuid}",))

    def image_update(self, ref: str, name: str | None = None, annotation: str | None = None) -> Change:
        record = self.image(ref)
        if name is not None and name != record.name and any(im.name == name for im in self.topo.images):
            raise ControlError(f"image {name} already exists; choose another name")
        update = {k: v for k, v in (("name", name), ("annotation", annotation)) if v is not None}
        images = [_build(Image, **{**im.model_dump(), **update}) if im.uuid == record.uuid else im for im in self.topo.images]
        vms = self.topo.vms
        if name is not None and name != record.name:  # the disks cloned from it follow the new name
            vms = [vm.model_copy(update={"disks": [d.model_copy(update={"image": name}) if d.image == record.name else d
                                                   for d in vm.disks]}) for vm in vms]
        return self._change("image.update", {"images": images, "vms": vms}, touched=(f"image:{record.uuid}",))

    def image_delete(self, ref: str) -> Change:
        record = self.image(ref)
        users = [f"{vm.name} ({d.address})" for vm in self.topo.vms for d in vm.disks if d.image == record.name]
        if users:  # its clones are made over its volume (AHV's are independent; a lab's are copy-on-write)
            raise ControlError(f"image {record.name} is in use by the disks of {', '.join(users)}; "
                               f"delete them (vm.disk_delete VM disk_addr=ADDR) first")
        images = [im for im in self.topo.images if im.uuid != record.uuid]
        return self._change("image.delete", {"images": images}, touched=(), deleted=(f"image:{record.uuid}",))

    # disks -----------------------------------------------------------------

    def disk_create(self, vm_ref: str, bus: str | None = None, index: int | None = None, create_size: int | None = None,
                    clone_from_image: str | None = None, clone_from_vmdisk: str | None = None, cdrom: bool = False,
                    empty: bool = False, container: str | None = None) -> Change:
        """acli's vm.disk_create: a blank disk (create_size, container), a clone of an image, a copy
        of a vmdisk, or a CD-ROM (empty, or holding an ISO image), at bus.index (default: scsi for
        a disk, ide for a CD-ROM, at the bus's lowest free index)."""
        vm = self._spec(vm_ref)
        self.check_container(container)
        sources = [k for k, v in (("create_size", create_size), ("clone_from_image", clone_from_image),
                                  ("clone_from_vmdisk", clone_from_vmdisk), ("empty", empty or None)) if v is not None]
        if cdrom:
            if create_size is not None or clone_from_vmdisk is not None:
                raise ControlError("a CD-ROM holds an ISO image or nothing: give clone_from_image=ISO or empty=true")
            if not empty and clone_from_image is None:
                raise ControlError("a CD-ROM needs clone_from_image=ISO or empty=true")
        elif empty:
            raise ControlError("empty=true is for a CD-ROM; add cdrom=true, or give create_size= for a blank disk")
        elif not sources:
            raise ControlError("vm.disk_create needs create_size=, clone_from_image= or clone_from_vmdisk= "
                               "(or cdrom=true empty=true)")
        elif clone_from_image is not None and clone_from_vmdisk is not None:
            raise ControlError("give clone_from_image= or clone_from_vmdisk=, not both")
        bus = bus or ("ide" if cdrom else "scsi")
        if bus not in BUS_SLOTS:
            raise ControlError(f"bus={echo(bus)} is not one of {', '.join(BUS_SLOTS)}")
        if cdrom and bus not in ("ide", "sata"):
            raise ControlError(f"a CD-ROM sits on bus ide or sata, not {bus}; give bus=ide or leave bus= out")
        taken = {d.index for d in vm.disks if d.bus == bus}
        if index is None:
            index = next((i for i in range(BUS_SLOTS[bus]) if i not in taken), None)
            if index is None:
                raise ControlError(f"bus {bus} of VM {vm.name} has no free index; use another bus")
        elif index >= BUS_SLOTS[bus]:
            raise ControlError(f"index={index} is not on bus {bus}, which has indexes 0-{BUS_SLOTS[bus] - 1}")
        elif index in taken:
            raise ControlError(f"VM {vm.name} already has a disk at {bus}.{index}; choose another index")
        if clone_from_image is not None:
            image = self.image(clone_from_image)
            if cdrom and image.type != "kIsoImage":
                raise ControlError(f"image {image.name} is a disk image; a CD-ROM holds an ISO image (image_type=kIsoImage)")
            if not cdrom and image.type == "kIsoImage":
                raise ControlError(f"image {image.name} is an ISO; put it in a CD-ROM (cdrom=true clone_from_image={image.name})")
            if create_size is not None and create_size < image.size:
                raise ControlError(f"create_size={size_text(create_size)} is smaller than image {image.name} "
                                   f"({size_text(image.size)}); a clone can only be larger")
        spec: dict = {"bus": bus, "index": index, "cdrom": cdrom,
                      "uuid": names.uuid_for(self.topo.name, "vmdisk", vm.uuid, f"{bus}.{index}",
                                             str(self.timestamps.get(f"vm:{vm.uuid}", 1)))}
        if clone_from_image is not None:
            spec["image"] = self.image(clone_from_image).name
            if create_size is not None:
                spec["size"] = create_size
        if clone_from_vmdisk is not None:
            source = self._vmdisk(clone_from_vmdisk)
            spec |= {"clone_of": source.uuid, "size": max(source.size, create_size or 0)}
        elif create_size is not None and clone_from_image is None:
            spec["size"] = create_size
        disk = _build(Disk, **spec)
        vms = [v.model_copy(update={"disks": [*v.disks, disk]}) if v.name == vm.name else v for v in self.topo.vms]
        return self._change("vm.disk_create", {"vms": vms}, touched=(f"vm:{vm.name}",))

    def _vmdisk(self, uuid: str) -> DiskRecord:
        for vm in self.topo.vms:
            for disk in self.disks(vm.name):
                if disk.uuid == uuid and not disk.cdrom:
                    return disk
        raise ControlError(f"vmdisk {echo(uuid)} does not exist; vm.disk_get VM disk_addr=scsi.0 shows a disk's vmdisk_uuid")

    def disk_update(self, vm_ref: str, address: str, new_size: int | None = None, clone_from_image: str | None = None,
                    empty: bool = False) -> Change:
        """A disk grown (new_size; never shrunk), or a CD-ROM's medium swapped (clone_from_image=ISO)
        or ejected (empty=true)."""
        vm = self._spec(vm_ref)
        current = self.disk(vm.name, address)
        if new_size is not None:
            if current.cdrom:
                raise ControlError(f"{address} is a CD-ROM; its size is its ISO's")
            if new_size < current.size:
                raise ControlError(f"new_size={size_text(new_size)} is smaller than the disk's {size_text(current.size)}; "
                                   f"a disk only grows")
            update = {"size": new_size}
        elif clone_from_image is not None or empty:
            if not current.cdrom:
                raise ControlError(f"{address} is a disk, not a CD-ROM; its image cannot be swapped "
                                   f"(vm.disk_delete it and vm.disk_create another)")
            image = self.image(clone_from_image) if clone_from_image else None
            if image is not None and image.type != "kIsoImage":
                raise ControlError(f"image {image.name} is a disk image; a CD-ROM holds an ISO image")
            update = {"image": image.name if image else None}
        else:
            raise ControlError("vm.disk_update needs new_size= (a disk) or clone_from_image= / empty=true (a CD-ROM)")
        disks = [d.model_copy(update=update) if d.address == address else d for d in vm.disks]
        vms = [v.model_copy(update={"disks": disks}) if v.name == vm.name else v for v in self.topo.vms]
        return self._change("vm.disk_update", {"vms": vms}, touched=(f"vm:{vm.name}",))

    def disk_delete(self, vm_ref: str, address: str) -> Change:
        vm = self._spec(vm_ref)
        self.disk(vm.name, address)  # a copy of it (clone_from_vmdisk) stands alone once made: it is not held
        disks = [d for d in vm.disks if d.address != address]
        boot = None if vm.boot == address else vm.boot  # the VM boots its first disk again
        vms = [v.model_copy(update={"disks": disks, "boot": boot}) if v.name == vm.name else v for v in self.topo.vms]
        return self._change("vm.disk_delete", {"vms": vms}, touched=(f"vm:{vm.name}",))

    def update_boot_device(self, vm_ref: str, disk_addr: str | None = None, mac_addr: str | None = None) -> Change:
        """The device the VM boots: one of its disks (disk_addr=scsi.0) or NICs (mac_addr=)."""
        vm = self._spec(vm_ref)
        if (disk_addr is None) == (mac_addr is None):
            raise ControlError("vm.update_boot_device needs disk_addr= (a disk, like scsi.0) or mac_addr= (a NIC), one of them")
        if disk_addr is not None:
            self.disk(vm.name, disk_addr)
            boot = disk_addr
        else:
            boot = _mac(mac_addr)
            if boot not in {n.mac for n in vm.nics}:
                raise ControlError(f"VM {vm.name} has no NIC with MAC {echo(mac_addr)}; its NICs: "
                                   f"{', '.join(n.mac for n in vm.nics if n.mac) or 'none'}")
        vms = [v.model_copy(update={"boot": boot}) if v.name == vm.name else v for v in self.topo.vms]
        return self._change("vm.update_boot_device", {"vms": vms}, touched=(f"vm:{vm.name}",))
