"""The built-in guest: a Debian cloud kernel and a busybox-static initramfs, made locally.

Inputs: the Debian kernel package (downloaded with apt into a cache), the
busybox-static binary, and the scripts in images/guest/. Their digest names
the build under /var/lib/labkit/images/<digest>/; `guest` points at the
current one, so an unchanged input set is never rebuilt. Nothing of this is
in git.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from .errors import HostError
from .model import IMAGE_DIR

IMAGES = Path(IMAGE_DIR).parent
DEB_CACHE = Path("/var/cache/labkit/debs")
GUEST_SRC = Path(__file__).resolve().parent.parent / "images" / "guest"
KERNEL_META = "linux-image-cloud-amd64"
BUSYBOX = Path("/bin/busybox")
# Drivers the guest loads at boot (dependencies are added from each module's .modinfo).
MODULES = ("virtio_pci", "virtio_net", "virtio_console", "virtio_balloon", "virtio_blk", "8021q", "isofs")


def kernel_package() -> str:
    """The concrete kernel package Debian's cloud meta-package points at (from local apt lists)."""
    run = subprocess.run(["apt-cache", "depends", KERNEL_META], capture_output=True, text=True)
    match = re.search(r"Depends: (linux-image-[0-9][^\s]*-cloud-amd64)", run.stdout)
    if not match:
        raise HostError(f"apt knows no {KERNEL_META}; run `apt-get update` (host.bootstrap does)")
    return match.group(1)


def fetch_kernel(package: str, say=print) -> Path:
    DEB_CACHE.mkdir(parents=True, exist_ok=True)
    found = sorted(DEB_CACHE.glob(f"{package}_*.deb"))
    if found:
        return found[-1]
    say(f"downloading {package} (apt-get download)")
    run = subprocess.run(["apt-get", "download", "-q", package], cwd=DEB_CACHE, capture_output=True, text=True)
    found = sorted(DEB_CACHE.glob(f"{package}_*.deb"))
    if run.returncode or not found:
        raise HostError(f"apt-get download {package} failed ({run.stderr.strip()[-200:]}); check apt's sources")
    return found[-1]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def inputs_digest(deb: Path) -> tuple[str, dict]:
    if not BUSYBOX.exists():
        raise HostError("busybox-static is not installed; run `invoke host.bootstrap`")
    inputs = {"kernel": deb.name, "kernel_sha256": _sha256(deb), "busybox_sha256": _sha256(BUSYBOX),
              "modules": list(MODULES),
              "scripts": {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(GUEST_SRC.iterdir())}}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16], inputs


def build(say=print, force: bool = False) -> Path:
    """Build (or reuse) the guest image; returns the directory `guest` now points at."""
    deb = fetch_kernel(kernel_package(), say)
    digest, inputs = inputs_digest(deb)
    target = IMAGES / digest
    current = IMAGES / "guest"
    if not force and (target / "initrd.img").exists() and (target / "vmlinuz").exists():
        say(f"guest image {digest} is up to date ({target})")
    else:
        say(f"building guest image {digest} from {deb.name} and busybox-static")
        _build_into(deb, target, inputs)
    tmp_link = IMAGES / ".guest.tmp"
    tmp_link.unlink(missing_ok=True)
    tmp_link.symlink_to(digest)
    os.replace(tmp_link, current)  # atomic: a running lab never sees a half-built image
    for old in IMAGES.iterdir():  # earlier builds: guests already running keep their kernel in memory
        if old.is_dir() and not old.is_symlink() and old.name != digest:
            shutil.rmtree(old, ignore_errors=True)
    return target


def _build_into(deb: Path, target: Path, inputs: dict) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "pkg"
        run = subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], capture_output=True, text=True)
        if run.returncode:
            raise HostError(f"cannot unpack {deb.name} ({run.stderr.strip()}); delete it from {DEB_CACHE} and retry")
        vmlinuz = next((root / "boot").glob("vmlinuz-*"))
        modules_dir = next((root / "lib" / "modules").iterdir()) / "kernel"
        order = module_order(modules_dir, MODULES)
        files: list[tuple[str, int, bytes]] = [
            ("init", 0o755, (GUEST_SRC / "init").read_bytes()),
            ("bin/busybox", 0o755, BUSYBOX.read_bytes()),
            ("lib/modules/load-order", 0o644, ("\n".join(name for name, _ in order) + "\n").encode()),
        ]
        files += [(f"bin/{p.name}", 0o755, p.read_bytes()) for p in sorted(GUEST_SRC.iterdir()) if p.name != "init"]
        files += [(f"lib/modules/{name}.ko", 0o644, path.read_bytes()) for name, path in order]
        staging = target.with_name(target.name + ".part")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        shutil.copyfile(vmlinuz, staging / "vmlinuz")
        (staging / "initrd.img").write_bytes(gzip.compress(newc_archive(files), compresslevel=6))
        (staging / "inputs.json").write_text(json.dumps(inputs, indent=1, sort_keys=True) + "\n")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)


def module_order(modules_dir: Path, wanted: tuple[str, ...]) -> list[tuple[str, Path]]:
    """Modules to insmod, dependencies first, read from each .ko's `depends=` modinfo entry
    (the package ships no modules.dep: depmod makes it at install time)."""
    paths = {p.stem.replace("-", "_"): p for p in modules_dir.rglob("*.ko")}
    order: list[tuple[str, Path]] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        path = paths.get(name)
        if path is None:
            return  # built into the kernel
        match = re.search(rb"\x00depends=([^\x00]*)\x00", path.read_bytes())
        for dep in (match.group(1).decode().split(",") if match and match.group(1) else []):
            visit(dep.replace("-", "_"))
        order.append((name, path))

    for name in wanted:
        visit(name)
    return order


def newc_archive(files: list[tuple[str, int, bytes]]) -> bytes:
    """A cpio 'newc' archive (what the kernel unpacks as initramfs), directories made implicitly."""
    out = io.BytesIO()
    inode = 1
    dirs: set[str] = set()

    def entry(name: str, mode: int, data: bytes) -> None:
        nonlocal inode
        header = "070701" + "".join(f"{v:08x}" for v in (
            inode, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0))
        out.write(header.encode() + name.encode() + b"\0")
        out.write(b"\0" * (-out.tell() % 4))
        out.write(data)
        out.write(b"\0" * (-out.tell() % 4))
        inode += 1

    for name, mode, data in files:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            directory = "/".join(parts[:i])
            if directory not in dirs:
                dirs.add(directory)
                entry(directory, 0o040755, b"")
        entry(name, 0o100000 | mode, data)
    entry("TRAILER!!!", 0, b"")
    return out.getvalue()


def current() -> Path | None:
    link = IMAGES / "guest"
    return link.resolve() if (link / "initrd.img").exists() else None
