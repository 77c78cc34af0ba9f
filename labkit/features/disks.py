"""Disks of VMs that boot their own image: a copy-on-write overlay (the user's image is never
written) and the cloud-init NoCloud seed, an ISO labelled cidata made with pycdlib."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pycdlib

from .. import cloudinit
from ..errors import HostError
from ..model import Domain


def prepare(dom: Domain) -> None:
    """The overlay of a VM booting its `image` file, and the cloud-init seed of every VM that
    boots its own OS (from that file, or from a disk cloned from a bootable image)."""
    if dom.image:
        _overlay(dom)
    Path(dom.seed).parent.mkdir(parents=True, exist_ok=True)
    write_seed(dom, Path(dom.seed))


def _overlay(dom: Domain) -> None:
    image = Path(dom.image)
    if not image.is_file():
        raise HostError(f"VM {dom.hostname}: image {image} does not exist; fix vms[].image in the topology")
    blocked = _unreadable_for_qemu(image)
    if blocked:
        raise HostError(f"VM {dom.hostname}: image {image} cannot be read by QEMU, which runs as another user "
                        f"({blocked}); put it under /var/lib/libvirt/images, or chmod o+rx its directories and o+r the file")
    overlay = Path(dom.overlay)
    overlay.parent.mkdir(parents=True, exist_ok=True)
    if not overlay.exists() or _backing(overlay) != str(image):
        overlay.unlink(missing_ok=True)
        _qemu_img("create", "-q", "-f", "qcow2", "-F", _format(image), "-b", str(image), str(overlay))


def _unreadable_for_qemu(image: Path) -> str:
    """Why a user other than root cannot read `image` ('' when it can): every directory above it
    must be searchable and the file readable by others (libvirt runs QEMU as libvirt-qemu)."""
    if not image.stat().st_mode & 0o004:
        return f"{image} is not world-readable"
    for directory in image.resolve().parents:
        if not directory.stat().st_mode & 0o001:
            return f"{directory} is not searchable by others"
    return ""


def write_seed(dom: Domain, path: Path) -> None:
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident="cidata")
    for index, (name, text) in enumerate(sorted(cloudinit.seed_files(dom).items())):
        data = text.encode()
        iso.add_fp(io.BytesIO(data), len(data), f"/FILE{index}.;1", rr_name=name, joliet_path=f"/{name}")
    tmp = path.with_suffix(".tmp")
    iso.write(str(tmp))
    iso.close()
    tmp.replace(path)


def _info(path: Path) -> dict:
    return json.loads(_qemu_img("info", "--output=json", "-U", str(path)))


def _format(path: Path) -> str:
    return _info(path)["format"]


def _backing(path: Path) -> str | None:
    return _info(path).get("full-backing-filename") or _info(path).get("backing-filename")


def _qemu_img(*args: str) -> str:
    """qemu-img has no library; it is the one tool this module runs."""
    run = subprocess.run(["qemu-img", *args], capture_output=True, text=True)
    if run.returncode:
        raise HostError(f"qemu-img {args[0]} failed: {run.stderr.strip()}")
    return run.stdout
