"""Preflight: what this host can do for a lab, checked for real, and how the lab must bend to it.

Each check is pass / degraded / fail with one line of advice. By default a
lab degrades and says so (TCG instead of KVM, no <locked/>, no <hostdev>,
userspace datapath); `--strict` turns every degraded check into a failure.
"""

from __future__ import annotations

import os
import resource
import select
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ..adaptation import Adaptation
from ..hoststate import GuestLoad
from ..model import Lab
from ..paths import KVM_DEVICE, RUN_DIR
from . import services

PASS, DEGRADED, FAIL = "pass", "degraded", "fail"
PROBE_CACHE = RUN_DIR / "kvm-probe"  # the KVM probe's verdict, once per boot
TSC_CACHE = RUN_DIR / "tsc-khz"  # the host's measured TSC frequency, once per boot
CAP_SYS_RESOURCE = 24
QEMU_OVERHEAD_MIB = 96  # per guest: QEMU itself, TCG translation cache, page tables
# TCG's translation cache per guest (MiB). A built-in guest's boot translates about 28 MiB of code:
# at 16 the cache was full again right at the agent's hello, so the first commands after boot
# (lab.verify's) flushed it and retranslated everything, 110-180 ms of a core per guest; at 24 it
# flushes once during boot and keeps 10 MiB free after it (QEMU's `info jit`). 8 boots slower.
TB_CACHE_MIB = 24


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str
    advice: str = ""


@dataclass(frozen=True)
class Report:
    checks: tuple[Check, ...]

    def status(self, name: str) -> str:
        return next(c.status for c in self.checks if c.name == name)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == FAIL]

    @property
    def degraded(self) -> list[Check]:
        return [c for c in self.checks if c.status == DEGRADED]

    def adaptation(self) -> Adaptation:
        from .. import images

        kvm = self.status("kvm") == PASS
        image = images.current()
        return Adaptation(domain_type="kvm" if kvm else "qemu", cpu_passthrough=kvm, tb_cache_mib=0 if kvm else TB_CACHE_MIB,
                          tsc_khz=None if kvm else host_tsc_khz(),
                          locked_memory=self.status("memlock") == PASS, passthrough=self.status("vfio") == PASS,
                          guest_image=image.name if image else "")

    def datapath_type(self) -> str:
        return "system" if self.status("ovs datapath") == PASS else "netdev"

    def table(self) -> str:
        width = max(len(c.name) for c in self.checks)
        lines = [f"{'check':<{width}}  {'status':<8}  detail / advice"]
        for c in self.checks:
            lines.append(f"{c.name:<{width}}  {c.status:<8}  {c.detail}")
            if c.advice and c.status != PASS:
                lines.append(f"{'':<{width}}  {'':<8}  -> {c.advice}")
        return "\n".join(lines)


# vCPUs per core, every running guest counted; a vCPU of a built-in guest counts BUILTIN_VCPU:
# idle, one takes about 0.1 % of a core (measured: bench/), so a 4-node x 24-VM lab fits two cores.
MAX_OVERSUBSCRIPTION = 24.0
BUILTIN_VCPU = 0.05  # 50x the measured idle use: lab.verify's probes and timers, with room
# A built-in guest's memory on the host, measured (ps RSS of its QEMU): about 108 MiB at 128 MiB,
# 115 at 256 MiB (with a 16 MiB cache, 8 less): QEMU, the translation cache and what the guest touches,
# whose free pages the balloon returns (free page reporting), plus the guest's page tables.
BUILTIN_BASE_MIB = 106


def footprint_mib(dom, locked: bool) -> int:
    """What a guest takes of the host's memory: a built-in guest what it touches (measured above),
    a guest with its own image (or whose memory is locked) all of it, and QEMU besides."""
    if dom.image is None and not (locked and dom.locked_memory):
        return BUILTIN_BASE_MIB + dom.memory_mib // 64
    return dom.memory_mib + QEMU_OVERHEAD_MIB


def run(lab: Lab | None = None, *, probe_kvm: bool = True, libvirt_cache: bool = False,
        running: frozenset[str] = frozenset(), others: GuestLoad = GuestLoad(),
        max_oversubscription: float = MAX_OVERSUBSCRIPTION) -> Report:
    """The checks; `running`: the lab's domains already running (their memory is already in use);
    `others`: the vCPUs of every other running guest on the host."""
    memlock = check_memlock(lab)
    checks = [
        check_services(),
        *([check_libvirt_cache(), check_reaping()] if libvirt_cache else []),
        check_kvm(probe=probe_kvm),
        memlock,
        check_vfio(lab),
        check_datapath(),
    ]
    if lab is not None:
        checks += [check_names(lab), check_memory(lab, running, locked=memlock.status == PASS),
                   check_cpus(lab, others, max_oversubscription)]
    return Report(tuple(checks))


CACHE_BOUND = 1.0  # seconds: a domain-capabilities query answered from libvirt's cache takes milliseconds


def check_libvirt_cache() -> Check:
    """libvirt's QEMU capabilities cache holds when a second domain-capabilities query is fast;
    when it does not, every domain start pays a QEMU probe (seconds, a minute on a busy host)."""
    import libvirt

    try:
        conn = libvirt.open("qemu:///system")
    except libvirt.libvirtError as exc:
        return Check("libvirt cache", FAIL, f"cannot connect to libvirt ({exc.get_error_message()})",
                     "run `invoke host.bootstrap` to start libvirtd")
    try:
        conn.getDomainCapabilities(None, "x86_64", None, "qemu", 0)  # fills the cache if it was empty
        started = time.monotonic()
        conn.getDomainCapabilities(None, "x86_64", None, "qemu", 0)
        took = time.monotonic() - started
    except libvirt.libvirtError as exc:
        return Check("libvirt cache", FAIL, f"libvirt cannot describe QEMU ({exc.get_error_message()})",
                     "check that qemu-system-x86 is installed")
    finally:
        conn.close()
    if took <= CACHE_BOUND:
        return Check("libvirt cache", PASS, f"QEMU capabilities come from libvirt's cache ({took * 1000:.0f} ms)")
    kvm = KVM_DEVICE
    if kvm.exists() and not services.udev_manages_dev() and not os.stat(kvm).st_mode & 0o060:
        cause = f"{kvm} is mode {os.stat(kvm).st_mode & 0o777:04o} and no udev runs to give it to group kvm"
    else:
        cause = "libvirt finds its cached QEMU capabilities out of date on every call"
    return Check("libvirt cache", FAIL, f"libvirt re-probes QEMU on every call ({took:.1f} s a query): {cause}",
                 "run `invoke host.bootstrap` (sets /dev/kvm root:kvm 0660 as udev would)")


def check_reaping() -> Check:
    """Who reaps the QEMU processes libvirtd orphans: a slow PID 1 makes every domain stop wait."""
    reaper = services.reaper_of("libvirtd")
    if reaper is None or reaper in services.REAPERS:
        return Check("reaping", PASS, f"exited QEMU processes are reaped at once ({reaper or 'libvirtd not running'})")
    return Check("reaping", DEGRADED, f"exited QEMU processes wait for PID 1 ({reaper}) to reap them: "
                                      f"stopping a domain can take seconds",
                 "stop libvirtd and run `invoke host.bootstrap`, which starts it under tini")


def check_services() -> Check:
    down = [s.name for s in services.SERVICES if not services.running(s)]
    if down:
        return Check("services", FAIL, f"not running: {', '.join(down)}", "run `invoke host.bootstrap` to start them")
    return Check("services", PASS, "ovsdb-server, ovs-vswitchd, virtlogd, libvirtd answer")


def check_kvm(probe: bool = True) -> Check:
    """A real probe (cached per boot in /run): on some hosts /dev/kvm exists but guests hang."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return Check("kvm", DEGRADED, "/dev/kvm is missing or not accessible",
                     "guests run under TCG (slower); enable virtualization to use KVM")
    from .. import images

    if images.current() is None:
        return Check("kvm", DEGRADED, "not probed: no guest image yet", "run `invoke images.build`, then preflight again")
    if PROBE_CACHE.exists():
        ok = PROBE_CACHE.read_text().strip() == "ok"
    elif not probe:
        return Check("kvm", DEGRADED, "not probed yet", "run `invoke host.preflight` to probe KVM")
    else:
        ok = _probe_kvm()
        PROBE_CACHE.parent.mkdir(parents=True, exist_ok=True)
        PROBE_CACHE.write_text("ok\n" if ok else "hang\n")
    if ok:
        return Check("kvm", PASS, "a probe guest ran under KVM")
    return Check("kvm", DEGRADED, "a probe guest did not run under KVM (hung or failed)",
                 f"guests run under TCG (domain type qemu); delete {PROBE_CACHE} to probe again")


def _probe_kvm(timeout: float = 10.0) -> bool:
    """Boot the guest kernel under KVM with labkit.probe: its init prints a marker.
    (A trivial boot sector is not enough: on some hosts it runs while a Linux guest hangs.)"""
    from .. import images
    from ..render import BASE_CMDLINE

    image = images.current()
    if image is None:
        return False
    cmd = ["qemu-system-x86_64", "-accel", "kvm", "-machine", "pc", "-m", "128", "-display", "none",
           "-nodefaults", "-no-reboot", "-serial", "stdio", "-kernel", str(image / "vmlinux"),
           "-initrd", str(image / "initrd.img"), "-append", f"{BASE_CMDLINE} panic=-1 labkit.probe"]
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return False
    seen, deadline = b"", time.monotonic() + timeout
    try:
        while b"LABKIT-PROBE-OK" not in seen and (left := deadline - time.monotonic()) > 0:
            if select.select([proc.stdout], [], [], left)[0]:
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                seen += chunk
    finally:
        proc.kill()
        proc.wait()
    return b"LABKIT-PROBE-OK" in seen


def host_tsc_khz() -> int | None:
    """This host's TSC frequency (a TCG guest's TSC is the host's), measured once per host boot by
    the image's labkit-tsc-khz and kept in /run, so every lab.up renders the same kernel line."""
    if TSC_CACHE.exists():
        return int(TSC_CACHE.read_text()) or None
    from .. import images

    image = images.current()
    if image is None or not (image / "labkit-tsc-khz").exists():
        return None
    run = subprocess.run([str(image / "labkit-tsc-khz")], capture_output=True, text=True)
    khz = int(run.stdout.strip()) if run.returncode == 0 and run.stdout.strip().isdigit() else 0
    TSC_CACHE.parent.mkdir(parents=True, exist_ok=True)
    TSC_CACHE.write_text(f"{khz}\n")
    return khz or None


def _has_capability(bit: int) -> bool:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> bit & 1)
    return False


def enforce(report: Report, strict: bool) -> None:
    """Fail on failed checks; with --strict on degraded ones too (DESIGN.md: degrade and say so)."""
    from ..errors import HostError

    bad = report.failed + (report.degraded if strict else [])
    if bad:
        what = "; ".join(f"{c.name}: {c.detail}" + (f" ({c.advice})" if c.advice else "") for c in bad)
        mode = " (--strict)" if strict and report.degraded else ""
        raise HostError(f"preflight{mode} stops the lab: {what}")


def check_memlock(lab: Lab | None) -> Check:
    need_mib = max((d.memory_mib for d in lab.domains if d.locked_memory), default=0) if lab else 0
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    hard_text = "unlimited" if hard == resource.RLIM_INFINITY else f"{hard // (1024 * 1024)} MiB"
    if _has_capability(CAP_SYS_RESOURCE) or hard == resource.RLIM_INFINITY or hard >= (need_mib + 1024) * 1024 * 1024:
        return Check("memlock", PASS, f"memlock hard limit {hard_text}; <locked/> can be honoured")
    return Check("memlock", DEGRADED, f"memlock hard limit {hard_text}, no CAP_SYS_RESOURCE",
                 "the CVM runs without <locked/>; raise the limit (ulimit -l unlimited) to lock its memory")


def check_vfio(lab: Lab | None) -> Check:
    devices = sorted({p for d in lab.domains for p in d.passthrough}) if lab else []
    if not Path("/dev/vfio/vfio").exists():
        return Check("vfio", DEGRADED, "no /dev/vfio/vfio (no VFIO driver)",
                     "the CVM runs without <hostdev>; load vfio-pci and enable the IOMMU for passthrough")
    if not any(Path("/sys/kernel/iommu_groups").glob("*")):
        return Check("vfio", DEGRADED, "no IOMMU groups", "enable the IOMMU (intel_iommu=on / amd_iommu=on)")
    missing = [d for d in devices if not Path(f"/sys/bus/pci/devices/{d}").exists()]
    if missing:
        return Check("vfio", DEGRADED, f"PCI device(s) {', '.join(missing)} not on this host",
                     "name devices of this host in nodes[].cvm.passthrough")
    return Check("vfio", PASS, "VFIO and IOMMU available")


def check_datapath() -> Check:
    from ..host import datapath_type

    if datapath_type() == "system":
        return Check("ovs datapath", PASS, "openvswitch kernel module loaded (datapath system)")
    return Check("ovs datapath", DEGRADED, "no openvswitch kernel module",
                 "bridges use the userspace datapath (datapath_type=netdev), as labkit does here")


def check_names(lab: Lab) -> Check:
    fallbacks = lab.deviations  # resolve records one per AHV name that fell back
    if not fallbacks:
        return Check("names", PASS, "every AHV name is free on this host")
    return Check("names", DEGRADED, "; ".join(str(d) for d in fallbacks),
                 "fallback names are used; free the AHV names to get them (never taken from their owners)")


def capacity_line(checks) -> str:
    """The capacity lab.up checks, in one line (lab.up and lab.plan print it)."""
    return "capacity: " + "; ".join(c.detail + (f" ({c.status})" if c.status != PASS else "")
                                    for c in checks if c.name in ("memory", "cpus"))


def check_memory(lab: Lab, running: frozenset[str] = frozenset(), locked: bool = False) -> Check:
    """Memory for the guests lab.up will start (footprint_mib each): MemAvailable already counts
    the running ones out."""
    need = sum(footprint_mib(d, locked) for d in lab.domains if d.power_on and d.name not in running)
    available = _meminfo_mib("MemAvailable")
    if need > available:
        return Check("memory", FAIL, f"lab needs {need} MiB, {available} MiB available ({need / max(available, 1):.1f}x)",
                     "use the lab profile or fewer VMs, or bring another lab down")
    return Check("memory", PASS, f"lab needs {need} MiB of {available} MiB available")


def check_cpus(lab: Lab, others: GuestLoad = GuestLoad(), limit: float = MAX_OVERSUBSCRIPTION) -> Check:
    """vCPU oversubscription with the lab up, every running guest counted: a vCPU of a built-in
    guest counts BUILTIN_VCPU (idle, it costs next to nothing), any other a whole one."""
    mine = [d for d in lab.domains if d.power_on]
    builtin = sum(d.vcpus for d in mine if d.image is None) + others.builtin
    whole = sum(d.vcpus for d in mine if d.image is not None) + others.vcpus
    cores = os.cpu_count() or 1
    ratio = (whole + builtin * BUILTIN_VCPU) / cores
    detail = (f"{sum(d.vcpus for d in mine)} vCPUs of this lab + {others.vcpus + others.builtin} of other running guests "
              f"on {cores} cores: {ratio:.1f} per core, a built-in guest's vCPU counted {BUILTIN_VCPU:g} (limit {limit:g})")
    if ratio > limit:
        return Check("cpus", FAIL, detail, "use fewer VMs or vCPUs, bring another lab down, "
                                           "or raise the limit (lab.up --max-oversubscription)")
    return Check("cpus", PASS, detail)


def _meminfo_mib(key: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) // 1024
    return 0
