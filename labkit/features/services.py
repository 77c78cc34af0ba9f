"""Packages and daemons: what `host.bootstrap` installs and starts (there is no systemd here).

apt and the daemons' own start scripts have no Python library to call, so
this module is the one place labkit runs them as processes.
"""

from __future__ import annotations

import grp
import os
import shutil
import socket
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import HostError
from ..paths import KVM_DEVICE, LIBVIRT_SOCK, LOG_DIR, OVS_CTL, OVSDB_SOCK, VIRTLOGD_SOCK

# Runtime packages (bootstrap.sh installs what building .venv needs).
APT_PACKAGES = (
    "openvswitch-switch", "libvirt-daemon-system", "libvirt-clients", "qemu-system-x86", "qemu-utils",
    "busybox-static", "dnsmasq-base", "cpio", "iproute2", "iputils-ping",
    # for the tests' locally made disk image (bring-your-own-image path): a FAT disk booted by syslinux
    "syslinux", "syslinux-common", "mtools", "dosfstools",
    # building the guest: its kernel from Debian's linux-source (labkit/kernel.py), its agent with musl
    "make", "gcc", "flex", "bison", "bc", "libelf-dev", "libssl-dev", "patch", "xz-utils", "musl-tools",
    "tini",  # runs libvirtd as a subreaper (see SERVICES)
    "graphviz",  # lab.diagram's layout (dot), also on Prism's web page
    "chromium", "chromium-driver",  # the tests of Prism's web page: a real browser, headless, nothing downloaded
    "ovmf",  # UEFI firmware for VMs created with uefi_boot=true
    "tcpdump",  # lab.capture
)


@dataclass(frozen=True)
class Service:
    name: str
    socket: str
    start: tuple[str, ...]
    foreground: bool = False  # runs in the foreground: started detached, its output to LOG_DIR/<name>.log


# libvirtd runs under tini as a subreaper: QEMU processes, orphaned by libvirtd's double fork, are
# reaped the moment they exit. Where PID 1 reaps slowly (containers, micro-VMs; 1.8 s measured
# here), libvirt's domain destroy waits for the zombie: every lab.down would wait with it.
SERVICES = (
    Service("ovsdb-server", OVSDB_SOCK, (OVS_CTL, "--no-ovs-vswitchd", "start")),
    Service("ovs-vswitchd", "", (OVS_CTL, "--no-ovsdb-server", "--no-monitor", "start")),
    Service("virtlogd", VIRTLOGD_SOCK, ("virtlogd", "-d")),
    Service("libvirtd", LIBVIRT_SOCK, ("tini", "-s", "--", "libvirtd"), foreground=True),
)
REAPERS = ("tini", "systemd", "init")  # parents that reap libvirtd's orphaned QEMU processes at once


def missing_packages(packages=APT_PACKAGES) -> list[str]:
    missing = []
    for pkg in packages:
        run = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
        if "install ok installed" not in run.stdout:
            missing.append(pkg)
    return missing


def install_packages(packages: list[str], say=print) -> None:
    if not packages:
        return
    if os.geteuid() != 0:
        raise HostError(f"packages {', '.join(packages)} are missing and installing them needs root; run as root")
    say(f"installing {' '.join(packages)} (apt)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages]):
        run = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if run.returncode:
            tail = (run.stderr or run.stdout).strip().splitlines()[-1:] or ["no output"]
            raise HostError(f"{' '.join(cmd[:2])} failed ({tail[0]}); check the apt sources and try again")


KVM_GROUP = "kvm"


def udev_manages_dev() -> bool:
    """Whether a udev daemon runs (its control socket exists): then it owns /dev's permissions."""
    return Path("/run/udev/control").exists()


def kvm_device_as_udev_sets_it() -> str | None:
    """Where no udev runs, give /dev/kvm the group and mode Debian's udev rule gives it (root:kvm
    0660). Without it libvirt probes QEMU as root (KVM opens), then finds KVM unusable for its
    QEMU user, never trusts its capabilities cache and re-probes QEMU (seconds) on most calls.
    Returns what was changed, or None."""
    if not KVM_DEVICE.exists() or udev_manages_dev():
        return None
    try:
        gid = grp.getgrnam(KVM_GROUP).gr_gid
    except KeyError:
        return None  # no kvm group: QEMU's packages make it; nothing to give the device to
    info = KVM_DEVICE.stat()
    if info.st_gid == gid and stat.S_IMODE(info.st_mode) & 0o060 == 0o060:
        return None
    os.chown(KVM_DEVICE, 0, gid)
    os.chmod(KVM_DEVICE, stat.S_IMODE(info.st_mode) | 0o660)
    return (f"{KVM_DEVICE} set to root:{KVM_GROUP} mode 0660, as Debian's udev rule sets it (no udev manages /dev "
            f"here); libvirt can now keep its QEMU capabilities cached")


def running(service: Service) -> bool:
    if service.name == "ovs-vswitchd":
        return _pid_alive(Path("/var/run/openvswitch/ovs-vswitchd.pid"))
    return _socket_answers(service.socket)


def start_services(say=print) -> list[str]:
    """Start every daemon that is not running; returns the names started. Idempotent."""
    started = []
    for service in SERVICES:
        if running(service):
            continue
        say(f"starting {service.name}")
        missing = [program for program in _programs(service.start) if not shutil.which(program)]
        if missing:
            raise HostError(f"{missing[0]} is not installed; run `invoke host.bootstrap`")
        if service.foreground:
            LOG_DIR.mkdir(parents=True, exist_ok=True)
            with open(LOG_DIR / f"{service.name}.log", "ab") as log:
                subprocess.Popen(service.start, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        else:
            run = subprocess.run(service.start, capture_output=True, text=True)
            if run.returncode:
                raise HostError(f"{service.name} did not start ({(run.stderr or run.stdout).strip()[-200:]}); "
                                f"see its log under /var/log")
        _wait(service)
        started.append(service.name)
    return started


def _programs(cmd: tuple[str, ...]) -> list[str]:
    """The executables a start command needs: its first word, and what `tini ... --` runs."""
    return [cmd[0]] + ([cmd[cmd.index("--") + 1]] if "--" in cmd else [])


def _wait(service: Service, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if running(service):
            return
        time.sleep(0.1)
    raise HostError(f"{service.name} was started but does not answer after {timeout:.0f} s; see its log under /var/log")


def _socket_answers(path: str) -> bool:
    if not path or not os.path.exists(path):
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        try:
            sock.connect(path)
            return True
        except OSError:
            return False


def reaper_of(daemon: str) -> str | None:
    """The name of the process that will reap `daemon`'s orphans: its parent if that is a known
    reaper, else PID 1's name (None when the daemon does not run)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "comm").read_text().strip() != daemon:
                continue
            ppid = next(line.split()[1] for line in (proc / "status").read_text().splitlines() if line.startswith("PPid:"))
            parent = Path(f"/proc/{ppid}/comm").read_text().strip()
            return parent if parent in REAPERS else Path("/proc/1/comm").read_text().strip()
        except (OSError, StopIteration):
            continue
    return None


def _pid_alive(pidfile: Path) -> bool:
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
        return True
    except (OSError, ValueError):
        return False
