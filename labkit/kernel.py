"""The guest's kernel: a minimal Linux built once from Debian's linux-source package, then cached.

Why not Debian's cloud kernel: under software emulation it spent about 2 s of a 3 s boot in
initcalls, ACPI's interpreter and module loading, and its idle timer kept a core 1 % busy per
guest. `images/kernel/labkit.config` on top of `make tinyconfig` builds every driver in, and the
uncompressed `vmlinux` boots through QEMU's PVH entry (no decompression); two small patches
(images/kernel/patches/) take out 0.3 s of waiting that only emulation makes slow. The build takes a few
minutes on two cores, once per linux-source version and config: its digest names the result
under /var/cache/labkit/kernel/. `vmlinuz` (the bzImage) is kept too, for boot loaders.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from .errors import HostError
from .paths import DEB_CACHE, KERNEL_CACHE, REPO_IMAGES

SOURCE_META = "linux-source"
CONFIG_FRAGMENT = REPO_IMAGES / "kernel" / "labkit.config"
PATCHES = REPO_IMAGES / "kernel" / "patches"  # applied in name order; each says why at its change
# What a build needs besides the source package (host.bootstrap installs them).
BUILD_TOOLS = ("make", "gcc", "flex", "bison", "bc", "objcopy", "patch")
RECIPE = "2"  # bump when the build steps below change what they produce

_OPTION = re.compile(r"^(?:(CONFIG_\w+)=(.*)|# (CONFIG_\w+) is not set)$")


def source_package() -> str:
    """The concrete linux-source-X.Y package Debian's meta-package points at (local apt lists)."""
    run = subprocess.run(["apt-cache", "depends", SOURCE_META], capture_output=True, text=True)
    match = re.search(r"Depends: (linux-source-[0-9][^\s]*)", run.stdout)
    if not match:
        raise HostError(f"apt knows no {SOURCE_META}; run `apt-get update` (host.bootstrap does)")
    return match.group(1)


def fetch(package: str, say=print) -> Path:
    """The package's .deb in labkit's cache (apt-get download; nothing is installed)."""
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


def wanted_options(text: str) -> dict[str, str]:
    """CONFIG_X -> value ('n' for `# CONFIG_X is not set`) from a config fragment or a .config."""
    options = {}
    for line in text.splitlines():
        match = _OPTION.match(line.strip())
        if match:
            options[match.group(1) or match.group(3)] = match.group(2) if match.group(1) else "n"
    return options


def missed_options(fragment: str, final: str) -> list[str]:
    """Options of the fragment that Kconfig did not keep (a dependency missing, a typo)."""
    have = wanted_options(final)
    return [f"{k}={v}" for k, v in wanted_options(fragment).items() if have.get(k, "n") != v]


def patches() -> list[Path]:
    return sorted(PATCHES.glob("*.patch"))


def digest(deb: Path) -> str:
    """Names a build by its inputs: the source package's version, the config, the patches, the recipe."""
    inputs = [deb.name, CONFIG_FRAGMENT.read_text(), RECIPE] + [p.read_text() for p in patches()]
    return hashlib.sha256("\0".join(inputs).encode()).hexdigest()[:16]


def build(say=print) -> Path:
    """The directory holding `vmlinux` and `vmlinuz` for the current inputs, built if need be."""
    deb = fetch(source_package(), say)
    target = KERNEL_CACHE / digest(deb)
    if (target / "vmlinux").exists() and (target / "vmlinuz").exists():
        return target
    missing = [tool for tool in BUILD_TOOLS if shutil.which(tool) is None]
    if missing:
        raise HostError(f"building the guest kernel needs {', '.join(missing)}; run `invoke host.bootstrap`")
    KERNEL_CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=KERNEL_CACHE, prefix=".build-") as tmp:
        tree = _unpack(deb, Path(tmp), say)
        for patch in patches():
            _run(["patch", "-p1", "--forward", "--quiet", "-i", str(patch)], tree, f"applying {patch.name}")
        _configure(tree, say)
        jobs = str((os.cpu_count() or 1) + 1)
        say(f"compiling the guest kernel ({jobs} jobs; a few minutes, once per kernel version)")
        _run(["make", "-s", f"-j{jobs}", "bzImage"], tree, "compiling the guest kernel", log=Path(tmp) / "build.log")
        staging = Path(tmp) / "out"
        staging.mkdir()
        _run(["objcopy", "--strip-all", str(tree / "vmlinux"), str(staging / "vmlinux")], tree, "stripping vmlinux")
        shutil.copyfile(tree / "arch/x86/boot/bzImage", staging / "vmlinuz")
        shutil.copyfile(tree / ".config", staging / "config")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)  # atomic: a half-built kernel is never found
    for old in KERNEL_CACHE.iterdir():  # earlier versions and configs
        if old.is_dir() and old.name != target.name and not old.name.startswith(".build-"):
            shutil.rmtree(old, ignore_errors=True)
    return target


def _unpack(deb: Path, into: Path, say) -> Path:
    """The source tree, without what a kernel build never reads (perf, selftests, device trees)."""
    say(f"unpacking {deb.name.split('_')[0]}")
    version = deb.name.split("_")[0].removeprefix("linux-source-")
    inner = f"./usr/src/linux-source-{version}.tar.xz"
    top = f"linux-source-{version}"
    script = (f"dpkg-deb --fsys-tarfile '{deb}' | tar -xO '{inner}' | tar -xJ -C '{into}' "
              f"--exclude='{top}/tools/perf' --exclude='{top}/tools/testing' --wildcards --exclude='{top}/arch/*/boot/dts'")
    _run(["sh", "-c", script], into, f"unpacking {deb.name}")
    return into / top


def _configure(tree: Path, say) -> None:
    say("configuring the guest kernel (tinyconfig + images/kernel/labkit.config)")
    _run(["make", "-s", "tinyconfig"], tree, "make tinyconfig")
    _run(["scripts/kconfig/merge_config.sh", "-m", ".config", str(CONFIG_FRAGMENT)], tree, "merging labkit.config")
    _run(["make", "-s", "olddefconfig"], tree, "make olddefconfig")
    missed = missed_options(CONFIG_FRAGMENT.read_text(), (tree / ".config").read_text())
    if missed:
        raise HostError(f"the guest kernel's config did not keep {', '.join(missed)}; "
                        f"fix images/kernel/labkit.config for this kernel version")


def _run(cmd: list[str], cwd: Path, what: str, log: Path | None = None) -> None:
    with open(log or os.devnull, "w") as out:
        run = subprocess.run(cmd, cwd=cwd, stdout=out if log else subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if run.returncode:
        text = log.read_text() if log else run.stdout
        tail = " | ".join(text.strip().splitlines()[-3:]) or "no output"
        raise HostError(f"{what} failed ({tail}); see `invoke images.build` after fixing it")
