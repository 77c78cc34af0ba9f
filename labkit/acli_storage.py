"""acli's images and disks: image.* and vm.disk_*, vm.update_boot_device (no I/O of their own:
an image's file is probed through the session).

Syntax from public Nutanix material: `image.create NAME source_url=file:///PATH container=NAME
image_type=kDiskImage`, `vm.disk_create VM clone_from_image=IMG` / `create_size=20G container=C`
/ `cdrom=true empty=true` / `cdrom=true clone_from_image=ISO` / `bus=ide`, `vm.disk_update VM
disk_addr=scsi.0 new_size=50G`, `vm.disk_get VM disk_addr=scsi.0`, `vm.disk_list VM` (columns
"Device bus  Device index"). The fields of image.get and vm.disk_get follow AHV's vm.get and v2
API names (vmdisk_uuid, vmdisk_size, container_uuid, source_vmdisk_uuid); no capture of them
is known, so their exact set is inferred.
"""

from __future__ import annotations

import urllib.parse

from .acli_base import AcliError, Command, Output, _bool, _int, proto, table
from .control import Change, Control
from .control_storage import DiskRecord, ImageRecord
from .values import disk_size, echo, loopback_host

def source_path(url: str, fetch=None) -> str:
    """source_url= as a file of the workstation's: file:///PATH, a plain absolute path, or an
    http(s) URL of a server on this workstation, which `fetch(url)` downloads (host/download.py).
    Nothing comes from another machine: such a source is refused, with what to give instead."""
    try:
        parsed = urllib.parse.urlparse(url)
        hostname = parsed.hostname
    except ValueError:
        raise AcliError(f"source_url={echo(url)} is not a URL; give source_url=file:///PATH") from None
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise AcliError(f"source_url={echo(url)} names another machine; give file:///PATH of a file of this workstation")
        path = urllib.parse.unquote(parsed.path)
    elif parsed.scheme in ("http", "https") and loopback_host(hostname) and fetch is not None:
        return fetch(url)
    elif parsed.scheme in ("http", "https", "nfs", "ftp"):
        raise AcliError(f"source_url={echo(url)} is on another machine; labkit downloads only from this workstation: "
                        f"save the file here and give source_url=file:///PATH (or serve it on http://127.0.0.1)")
    elif parsed.scheme:
        raise AcliError(f"source_url={echo(url)} is not a file:// URL; give source_url=file:///PATH")
    else:
        path = url
    if not path.startswith("/"):
        raise AcliError(f"source_url={echo(url)} is not an absolute path; give source_url=file:///FULL/PATH")
    return path


def _size(kw: dict, key: str) -> int | None:
    if key not in kw:
        return None
    try:
        return disk_size(kw[key])
    except ValueError:
        raise AcliError(f"{key}={echo(kw[key])} is not a disk size; write it like 20G, 512M or 1T, from 1M to 16T") from None


def _address(kw: dict) -> str:
    text = kw["disk_addr"]
    bus, dot, index = text.partition(".")
    if not dot or bus not in ("scsi", "pci", "ide", "sata") or not index.isdigit() or len(index) > 3:
        raise AcliError(f"disk_addr={echo(text)} is not a disk address; write it like scsi.0 or ide.1")
    return f"{bus}.{int(index)}"


def image_fields(im: ImageRecord) -> dict:
    return {"annotation": im.annotation or None, "container_name": im.container, "container_uuid": im.container_uuid,
            "image_state": "kActive", "image_type": im.type, "logical_timestamp": im.logical_timestamp, "name": im.name,
            "uuid": im.uuid, "vmdisk_size": im.size, "vmdisk_uuid": im.vmdisk_uuid}


def disk_fields(d: DiskRecord) -> dict:
    fields = {"addr": {"bus": d.bus, "index": d.index}, "device_uuid": d.device_uuid}
    if d.cdrom:
        fields["cdrom"] = True
    if d.empty:
        fields["empty"] = True
        return fields
    fields |= {"container_uuid": d.container_uuid, "vmdisk_size": d.size, "vmdisk_uuid": d.uuid,
               "source_vmdisk_uuid": d.source_vmdisk_uuid}
    return fields


def _image_create(ctl: Control, args, kw, session) -> Change:
    path = source_path(kw["source_url"], lambda url: session.fetch(url, f"image {args[0]}"))
    kind = kw.get("image_type", "kDiskImage")
    if kind not in ("kDiskImage", "kIsoImage"):
        raise AcliError(f"image_type={echo(kind)} is not kDiskImage or kIsoImage")
    return ctl.image_create(args[0], path, kind, session.probe(path, f"image {args[0]}"), kw.get("container"),
                            kw.get("annotation", ""))


def _image_list(ctl: Control, _args, _kw) -> Output:
    images = ctl.images()
    return Output(table(["Image name", "Image type", "Image UUID"], [[i.name, i.type, i.uuid] for i in images]),
                  [i.v2() for i in images])


def _image_get(ctl: Control, args, _kw) -> Output:
    im = ctl.image(args[0])
    return Output(proto(im.name, image_fields(im)), im.v2())


def _disk_create(ctl: Control, args, kw) -> Change:
    return ctl.disk_create(args[0], kw.get("bus"), _int(kw, "index", 0, 255), _size(kw, "create_size"),
                           kw.get("clone_from_image"), kw.get("clone_from_vmdisk"), _bool(kw, "cdrom"), _bool(kw, "empty"),
                           kw.get("container"))


def _disk_list(ctl: Control, args, _kw) -> Output:
    disks = ctl.disks(args[0])
    return Output(table(["Device bus", "Device index"], [[d.bus, str(d.index)] for d in disks]), [d.v2() for d in disks])


def _disk_get(ctl: Control, args, kw) -> Output:
    disks = [ctl.disk(args[0], _address(kw))] if "disk_addr" in kw else ctl.disks(args[0])
    return Output([line for d in disks for line in proto(d.address, disk_fields(d))], [d.v2() for d in disks])


def _disk_update(ctl: Control, args, kw) -> Change:
    return ctl.disk_update(args[0], _address(kw), _size(kw, "new_size"), kw.get("clone_from_image"), _bool(kw, "empty"))


def _boot_device(ctl: Control, args, kw) -> Change:
    return ctl.update_boot_device(args[0], _address(kw) if "disk_addr" in kw else None, kw.get("mac_addr"))


DISK_KW = ("bus", "index", "create_size", "container", "clone_from_image", "clone_from_vmdisk", "cdrom", "empty")
COMMANDS = (
    Command("image.create", ("name",), ("source_url", "container", "image_type", "annotation"), ("source_url",),
            _image_create, "copy a disk image or ISO of this workstation (source_url=file:///PATH) into the lab's container",
            unmodelled=("architecture", "product_name", "product_version", "wait", "compute_checksum"), session=True),
    Command("image.list", (), (), (), _image_list, "list the images"),
    Command("image.get", ("image",), (), (), _image_get, "show an image"),
    Command("image.update", ("image",), ("name", "annotation"), (),
            lambda ctl, a, kw: ctl.image_update(a[0], kw.get("name"), kw.get("annotation")), "rename an image or set its annotation"),
    Command("image.delete", ("image",), (), (), lambda ctl, a, kw: ctl.image_delete(a[0]),
            "delete an image no disk is cloned from", True),
    Command("vm.disk_create", ("vm",), DISK_KW, (), _disk_create,
            "add a disk: create_size=20G (blank), clone_from_image=IMG, clone_from_vmdisk=UUID, or cdrom=true "
            "(empty=true or clone_from_image=ISO); hot-added to a running VM on scsi and pci",
            unmodelled=("flash_mode", "scsi_passthru", "minimum_size", "storage_policy", "disk_type")),
    Command("vm.disk_list", ("vm",), (), (), _disk_list, "list a VM's disks"),
    Command("vm.disk_get", ("vm",), ("disk_addr",), (), _disk_get, "show a VM's disks (disk_addr=scsi.0: one)"),
    Command("vm.disk_update", ("vm",), ("disk_addr", "new_size", "clone_from_image", "empty"), ("disk_addr",), _disk_update,
            "grow a disk (new_size=; a running VM's guest sees it at once), or swap a CD-ROM's ISO",
            unmodelled=("flash_mode",)),
    Command("vm.disk_delete", ("vm",), ("disk_addr",), ("disk_addr",),
            lambda ctl, a, kw: ctl.disk_delete(a[0], _address(kw)), "remove a disk and delete its vmdisk"),
    Command("vm.update_boot_device", ("vm",), ("disk_addr", "mac_addr"), (), _boot_device,
            "boot a VM from one of its disks (disk_addr=scsi.0) or NICs (mac_addr=)"),
)
