"""Storage adapter: the lab's storage container (a libvirt directory pool) and its volumes, and
qemu-img for what libvirt does not do (an image's format, its copy into the pool).

qemu-img has no library; it is the one program this module runs, always with absolute paths
(a path that starts with '/' is never read as a protocol such as nbd: or json:) and with the
source's format given once it is known. A source with a backing file or an external data file
is refused: it would read files the user did not name.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import libvirt

from ..errors import HostError
from ..model import Pool, Volume
from ..paths import STORAGE_DIR
from . import DEADLINE

IMAGE_FORMATS = ("qcow2", "raw", "vmdk", "vdi", "vhdx", "vpc")
BOOT_SIGNATURE = b"\x55\xaa"  # the last two bytes of a bootable MBR (a GPT disk's protective MBR has it too)


@dataclass(frozen=True)
class ImageFacts:
    """What an image file is, as qemu-img and its first sector say."""

    format: str
    size: int  # virtual size, bytes
    bootable: bool


def probe(path: str, what: str) -> ImageFacts:
    """The format, virtual size and bootability of the image file at `path` (absolute); one
    sentence naming `what` when it is not one labkit can use."""
    file = Path(path)
    if not file.is_absolute():
        raise HostError(f"{what}: {path} is not an absolute path; give the file's full path")
    try:
        with file.open("rb"):
            pass
    except OSError as exc:
        raise HostError(f"{what}: cannot read {path} ({exc.strerror}); give a readable file of this workstation") from None
    if not file.is_file():
        raise HostError(f"{what}: {path} is not a regular file; give a disk image or ISO file")
    info = json.loads(_qemu_img("info", "--output=json", "-U", path, what=what))
    fmt = info.get("format", "")
    if fmt not in IMAGE_FORMATS:
        raise HostError(f"{what}: {path} is a {fmt or 'unknown'} file, not a disk image; give one of {', '.join(IMAGE_FORMATS)}")
    if info.get("backing-filename") or info.get("format-specific", {}).get("data", {}).get("data-file"):
        raise HostError(f"{what}: {path} depends on another file (a backing or data file); "
                        f"flatten it first (qemu-img convert -O qcow2 {path} NEW)")
    return ImageFacts(fmt, int(info["virtual-size"]), _bootable(path, fmt, what))


def _bootable(path: str, fmt: str, what: str) -> bool:
    """Whether the image's first sector ends in the boot signature (read through qemu-img, which
    reads any format)."""
    with tempfile.TemporaryDirectory(prefix="labkit-probe-") as tmp:
        out = Path(tmp) / "sector"
        _qemu_img("dd", "-f", fmt, "-O", "raw", "bs=512", "count=1", f"if={path}", f"of={out}", what=what)
        sector = out.read_bytes()
    return len(sector) == 512 and sector[510:512] == BOOT_SIGNATURE


def _qemu_img(*args: str, what: str) -> str:
    try:
        run = subprocess.run(["qemu-img", *args], capture_output=True, text=True, timeout=max(DEADLINE, 600))
    except FileNotFoundError:
        raise HostError("qemu-img is not installed (package qemu-utils); run `invoke host.bootstrap`") from None
    if run.returncode:
        lines = run.stderr.strip().splitlines() or ["no message"]
        raise HostError(f"{what}: qemu-img {args[0]} failed ({lines[-1].removeprefix('qemu-img: ')})")
    return run.stdout


class Storage:
    """The lab's pools and volumes, through the libvirt connection of a Virt adapter."""

    def __init__(self, virt):
        self.virt = virt
        self.conn = virt.conn

    def create_pool(self, pool: Pool, xml: str) -> None:
        Path(pool.path).mkdir(parents=True, exist_ok=True, mode=0o711)
        try:
            found = self.conn.storagePoolLookupByName(pool.name)
        except libvirt.libvirtError:
            found = self.virt._call(f"define storage pool {pool.name}", self.conn.storagePoolDefineXML, xml, 0)
        if not found.isActive():
            self.virt._call(f"start storage pool {pool.name}", found.create, 0)

    def create_volume(self, pool: Pool, vol: Volume, xml: str, say=print) -> None:
        if vol.source is not None:
            self._copy_image(pool, vol, say)
            return
        found = self._pool(pool.name)
        self.virt._call(f"create volume {vol.name} ({vol.purpose})", found.createXML, xml, 0)

    def _copy_image(self, pool: Pool, vol: Volume, say) -> None:
        """An image's copy in the container: a disk image converted to qcow2, an ISO copied raw;
        written beside its final name and renamed, so a copy cut short is never taken for one."""
        target = Path(pool.path_of(vol.name))
        what = vol.purpose
        say(f"  copying {what} from {vol.source} ({vol.capacity / 2**20:,.0f} MiB)")
        staging = target.with_name(f".{vol.name}.partial")
        staging.unlink(missing_ok=True)
        try:
            # -U: a copy of a disk of a running VM (vm.clone) reads it while QEMU holds it (crash-consistent)
            _qemu_img("convert", "-q", "-U", "-f", vol.source_format or "raw", "-O", vol.format, vol.source, str(staging),
                      what=what)
            made = int(json.loads(_qemu_img("info", "--output=json", str(staging), what=what))["virtual-size"])
            if vol.capacity > made:  # a copy given a larger size than its source's
                _qemu_img("resize", "-q", "-f", vol.format, str(staging), str(vol.capacity), what=what)
            os.chmod(staging, 0o600)
            staging.rename(target)
        finally:
            staging.unlink(missing_ok=True)
        self.virt._call(f"refresh storage pool {pool.name}", self._pool(pool.name).refresh, 0)

    def grow_volume(self, pool: Pool, vol: Volume) -> None:
        """A disk grown to its new size: through its running domain when it has one (the guest
        sees the new size at once), else in the pool."""
        dom = self.virt.domain(vol.domain) if vol.domain else None
        if dom is not None and dom.isActive():
            self.virt._call(f"grow disk {vol.target} of {vol.domain}", dom.blockResize, vol.target, vol.capacity,
                            libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)
            return
        found = self.virt._call(f"find volume {vol.name}", self._pool(pool.name).storageVolLookupByName, vol.name)
        self.virt._call(f"grow volume {vol.name}", found.resize, vol.capacity, 0)

    def delete_volume(self, pool_name: str, name: str) -> None:
        try:
            found = self._pool(pool_name).storageVolLookupByName(name)
        except libvirt.libvirtError:
            return
        self.virt._call(f"delete volume {name}", found.delete, 0)

    def delete_pool(self, name: str, lab: str) -> None:
        try:
            found = self.conn.storagePoolLookupByName(name)
        except libvirt.libvirtError:
            return
        from lxml import etree

        path = etree.fromstring(found.XMLDesc(0).encode()).findtext("target/path") or ""
        if not path.startswith(f"{STORAGE_DIR}/{lab}/"):
            raise HostError(f"storage pool {name} is not lab {lab}'s (its directory {path} is not under "
                            f"{STORAGE_DIR}/{lab}); labkit leaves it alone")
        if found.isActive():
            self.virt._call(f"stop storage pool {name}", found.destroy)
        self.virt._call(f"undefine storage pool {name}", found.undefine)
        shutil.rmtree(path, ignore_errors=True)  # partial copies a killed run left
        with contextlib.suppress(OSError):  # the lab's directory, once its last pool is gone
            Path(path).parent.rmdir()

    def _pool(self, name: str):
        return self.virt._call(f"find storage pool {name}", self.conn.storagePoolLookupByName, name)
