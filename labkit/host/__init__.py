"""Adapters: one per real system (OVSDB, netlink, libvirt), thin, no subprocesses where a library exists.

Every call into a system that can hang (a daemon stopped, wedged or gone) is bounded: `bounded`
for a call labkit makes once (a connection, a reading), libvirt's own keepalive for a libvirt
connection (host/virt.py), a timeout on every program run. A call past its bound is one
sentence naming the system and what to check; the command then ends, releasing its locks.
"""

from __future__ import annotations

import os
import threading

# Seconds a host system may take to answer before the command gives up on it (LABKIT_HOST_DEADLINE
# sets it: the tests that stop a daemon on purpose use a few seconds).
DEADLINE = float(os.environ.get("LABKIT_HOST_DEADLINE", "60"))

# What to check for each system, in the sentence that names it.
DAEMONS = {
    "OVSDB": "ovsdb-server (ovs-vsctl show)",
    "libvirt": "libvirtd (virsh list)",
    "netlink": "the kernel's netlink (ip link)",
}


def datapath_type() -> str:
    """OVS's datapath for the lab's bridges: the kernel's where its openvswitch module is loaded,
    else the userspace one (netdev)."""
    return "system" if os.path.exists("/sys/module/openvswitch") else "netdev"


UEFI_FIRMWARE = "/usr/share/qemu/firmware/60-edk2-x86_64.json"  # Debian's OVMF, as libvirt's firmware autoselection finds it


def uefi() -> bool:
    """Whether OVMF is installed (package ovmf): uefi_boot VMs then start under UEFI."""
    return os.path.exists(UEFI_FIRMWARE)


def netem() -> bool:
    """Whether the kernel has tc's netem (lab.impair's delay, loss...): built in or as a module.
    Where the kernel does not say (no /proc/config.gz, no module tree), it is taken to have it."""
    import gzip
    import platform

    if os.path.exists("/sys/module/sch_netem"):
        return True
    modules = f"/lib/modules/{platform.release()}/kernel/net/sched"
    if os.path.isdir(modules):
        return any(name.startswith("sch_netem.") for name in os.listdir(modules))
    try:
        with gzip.open("/proc/config.gz", "rt") as config:
            return any(line.startswith(("CONFIG_NET_SCH_NETEM=y", "CONFIG_NET_SCH_NETEM=m")) for line in config)
    except OSError:
        return True


class Connection:
    """A connection to one system, usable in `with`: closed when the block ends."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def hung(system: str, what: str, seconds: float = DEADLINE):
    """The error for a system that did not answer in time (a HostError, one sentence)."""
    from ..errors import HostError

    return HostError(f"{system} did not answer within {seconds:.0f} s ({what}); check that {DAEMONS[system]} "
                     f"runs and answers, then run the command again")


def bounded(system: str, what: str, fn, *args, seconds: float | None = None):
    """fn(*args) in a thread of its own, waited for at most `seconds` (DEADLINE): a call that hangs
    is left behind (a daemon thread, gone with the process) and `hung` is raised instead."""
    result: dict = {}

    def run() -> None:
        try:
            result["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True, name=f"labkit {system}")
    thread.start()
    thread.join(DEADLINE if seconds is None else seconds)
    if thread.is_alive():
        raise hung(system, what, DEADLINE if seconds is None else seconds)
    if "error" in result:
        raise result["error"]
    return result.get("value")
