"""The built-in guest: labkit's kernel (labkit/kernel.py) and an initramfs of busybox-static,
the init scripts in images/guest/ and labkit's agent and prober, compiled here with musl.

Inputs: the kernel build, the busybox-static binary, the files in images/guest/ and the C
compiler's version. Their digest names the build under /var/lib/labkit/images/<digest>/;
`guest` points at the current one, so an unchanged input set is never rebuilt. Nothing of this
is in git. The initramfs is an uncompressed cpio with busybox's applets as symlinks: nothing to
decompress or install at boot.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from . import kernel
from .errors import HostError
from .paths import IMAGES, REPO_IMAGES

GUEST_SRC = REPO_IMAGES / "guest"
HOST_SRC = REPO_IMAGES / "host"  # programs labkit runs on the host, built with the guest (same compiler)
BUSYBOX = Path("/bin/busybox")
CC = "musl-gcc"  # static binaries of a few dozen KB (glibc's are 700 KB)
ROOT_DIRS = ("bin", "dev", "etc", "proc", "root", "run", "sys", "tmp")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _compiler_version() -> str:
    if shutil.which(CC) is None:
        raise HostError(f"{CC} is not installed (package musl-tools); run `invoke host.bootstrap`")
    return subprocess.run([CC, "--version"], capture_output=True, text=True).stdout.splitlines()[0]


def inputs_digest(kernel_dir: Path) -> tuple[str, dict]:
    if not BUSYBOX.exists():
        raise HostError("busybox-static is not installed; run `invoke host.bootstrap`")
    inputs = {"kernel": kernel_dir.name, "busybox_sha256": _sha256(BUSYBOX), "cc": _compiler_version(),
              "sources": _sources()}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16], inputs


def build(say=print, force: bool = False) -> Path:
    """Build (or reuse) the guest image; returns the directory `guest` now points at."""
    kernel_dir = kernel.build(say)
    digest, inputs = inputs_digest(kernel_dir)
    target = IMAGES / digest
    current = IMAGES / "guest"
    if not force and all((target / name).exists() for name in ("vmlinux", "vmlinuz", "initrd.img")):
        say(f"guest image {digest} is up to date ({target})")
    else:
        say(f"building guest image {digest}: labkit's kernel, busybox-static, the agent")
        _build_into(kernel_dir, target, inputs)
    IMAGES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=IMAGES, prefix=".link-") as tmp:
        link = Path(tmp) / "guest"
        link.symlink_to(digest)
        os.replace(link, current)  # atomic: a running lab never sees a half-built image
    for old in IMAGES.iterdir():  # earlier builds: guests already running keep their kernel in memory
        if old.is_dir() and not old.is_symlink() and old.name != digest and not old.name.startswith("."):
            shutil.rmtree(old, ignore_errors=True)
    return target


def _build_into(kernel_dir: Path, target: Path, inputs: dict) -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    # A private staging directory: two builds at once never share or delete each other's files.
    with tempfile.TemporaryDirectory(dir=IMAGES, prefix=".build-") as tmp:
        staging = Path(tmp) / "image"
        staging.mkdir()
        programs = {src.stem: _compile(src, Path(tmp)) for src in sorted(GUEST_SRC.glob("*.c"))}
        # labkit-agent (the shell agent cloud-init installs in bring-your-own images) is shadowed by its C build.
        scripts = [p for p in sorted(GUEST_SRC.iterdir()) if p.suffix != ".c" and p.name not in {"init", *programs}]
        files: list[tuple[str, int, bytes]] = [("init", 0o755, (GUEST_SRC / "init").read_bytes()),
                                               ("bin/busybox", 0o755, BUSYBOX.read_bytes())]
        files += [(f"bin/{p.name}", 0o755, p.read_bytes()) for p in scripts]
        files += [(f"bin/{name}", 0o755, data) for name, data in programs.items()]
        ours = {name.rsplit("/", 1)[-1] for name, _, _ in files}
        links = [(f"bin/{applet}", "busybox") for applet in busybox_applets() if applet not in ours]
        for source in sorted(HOST_SRC.glob("*.c")):
            (staging / source.stem).write_bytes(_compile(source, Path(tmp)))
            (staging / source.stem).chmod(0o755)
        shutil.copyfile(kernel_dir / "vmlinux", staging / "vmlinux")
        shutil.copyfile(kernel_dir / "vmlinuz", staging / "vmlinuz")
        (staging / "initrd.img").write_bytes(newc_archive(files, dirs=ROOT_DIRS, links=links))
        (staging / "inputs.json").write_text(json.dumps(inputs, indent=1, sort_keys=True) + "\n")
        shutil.rmtree(target, ignore_errors=True)
        try:
            staging.rename(target)
        except OSError:  # another build of the same inputs got there between: the same files
            if not all((target / name).exists() for name in ("vmlinux", "vmlinuz", "initrd.img", "inputs.json")):
                raise


def _compile(source: Path, workdir: Path) -> bytes:
    out = workdir / source.stem
    run = subprocess.run([CC, "-static", "-Os", "-s", "-Wall", "-o", str(out), str(source)], capture_output=True, text=True)
    if run.returncode:
        raise HostError(f"compiling {source.name} failed ({run.stderr.strip()[-300:]}); this is a labkit bug, please report it")
    return out.read_bytes()


def busybox_applets() -> list[str]:
    run = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True)
    if run.returncode:
        raise HostError(f"{BUSYBOX} --list failed; reinstall busybox-static")
    return sorted(run.stdout.split())


def newc_archive(files: list[tuple[str, int, bytes]], dirs: tuple[str, ...] = (),
                 links: list[tuple[str, str]] = ()) -> bytes:
    """A cpio 'newc' archive (what the kernel unpacks as initramfs): `dirs`, `files` (parent
    directories made implicitly) and symbolic `links` (name, target)."""
    out = io.BytesIO()
    inode = 1
    made: set[str] = set()

    def entry(name: str, mode: int, data: bytes) -> None:
        nonlocal inode
        header = "070701" + "".join(f"{v:08x}" for v in (
            inode, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0))
        out.write(header.encode() + name.encode() + b"\0")
        out.write(b"\0" * (-out.tell() % 4))
        out.write(data)
        out.write(b"\0" * (-out.tell() % 4))
        inode += 1

    def directory(path: str) -> None:
        parts = path.split("/")
        for i in range(1, len(parts) + 1):
            name = "/".join(parts[:i])
            if name not in made:
                made.add(name)
                entry(name, 0o040755, b"")

    for name in dirs:
        directory(name)
    for name, mode, data in files:
        if "/" in name:
            directory(name.rsplit("/", 1)[0])
        entry(name, 0o100000 | mode, data)
    for name, target in links:
        if "/" in name:
            directory(name.rsplit("/", 1)[0])
        entry(name, 0o120777, target.encode())
    entry("TRAILER!!!", 0, b"")
    return out.getvalue()


def _sources() -> dict[str, str]:
    return {f"{p.parent.name}/{p.name}": hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(GUEST_SRC.iterdir()) + sorted(HOST_SRC.iterdir())}


def needs_build() -> bool:
    """No guest image yet, or labkit's guest programs changed since it was built (a cheap check:
    lab.up makes it every time; `images.build` also notices a new kernel, busybox or compiler)."""
    image = current()
    if image is None:
        return True
    try:
        return json.loads((image / "inputs.json").read_text())["sources"] != _sources()
    except (OSError, ValueError, KeyError):
        return True


def current() -> Path | None:
    link = IMAGES / "guest"
    return link.resolve() if (link / "initrd.img").exists() and (link / "vmlinux").exists() else None
