"""How a host bends AHV's libvirt XML where it cannot run it (no KVM, no memlock, no VFIO) or
should not (lean guests for many on one workstation): a plain value that preflight decides and
render reads. `Adaptation.ahv()` bends nothing. Every bend is a deviation lab.up reports."""

from __future__ import annotations

from dataclasses import dataclass

from .model import Deviation, Lab


@dataclass(frozen=True)
class Adaptation:
    """What the host allows; every False is a deviation from AHV that `lab.up` reports."""

    domain_type: str = "kvm"  # "qemu" (TCG) where a KVM probe fails
    cpu_passthrough: bool = True  # host-passthrough needs KVM
    locked_memory: bool = True  # <locked/> needs a memlock limit above guest memory
    passthrough: bool = True  # <hostdev> needs VFIO and the device
    # AHV: libvirt makes virbr0 and holds 192.168.5.1 on it. On a workstation that would put the
    # address, and libvirt's firewall rules for an isolated network, in the workstation's namespace:
    # there labkit makes the bridge itself and the libvirt network only points at it.
    local_bridge_by_libvirt: bool = False
    serial_file: bool = False  # serial to a file only (the seed's); otherwise a pty logged to that file
    # Lean guests, for many on one workstation: no NIC boot ROMs (SeaBIOS runs each one; the guest
    # boots its kernel directly), and free page reporting, so guest memory freed after boot goes
    # back to the host.
    lean: bool = True
    tb_cache_mib: int = 0  # TCG's translation cache; 0 leaves QEMU's default (1 GiB, much of it touched)
    # The host's TSC frequency for TCG guests (their TSC is the host's): given to the guest kernel,
    # which otherwise calibrates against the emulated PIT, fails when the host is busy, falls back
    # to jiffies and then ticks 1000 times a second even when idle.
    tsc_khz: int | None = None
    # AHV restarts a crashed CVM. libvirt would make its taps anew, in the workstation's namespace,
    # where the kernel gives each an IPv6 address before labkit can take it off: the lab destroys a
    # crashed CVM instead, and the next lab.up starts it (no address on the workstation, ever).
    restart_on_crash: bool = False
    # The built-in guest image the domains boot (its digest): named on their kernel command line,
    # so that a new image (labkit's guest programs changed) changes their definitions and lab.up
    # restarts them on it, rather than leaving them on programs labkit no longer speaks to.
    guest_image: str = ""

    @classmethod
    def ahv(cls) -> "Adaptation":
        """AHV-faithful: everything the seed's node has (lab.render shows this)."""
        return cls(local_bridge_by_libvirt=True, serial_file=True, lean=False, restart_on_crash=True)

    def deviations(self, lab: Lab) -> list[Deviation]:
        out = []
        if self.domain_type != "kvm":
            out.append(Deviation("domain type", "qemu (software emulation, TCG): KVM is not usable on this host"))
        if not self.cpu_passthrough:
            out.append(Deviation("CPU", "no host-passthrough CPU: it needs KVM"))
        if not self.locked_memory and any(d.locked_memory for d in lab.domains):
            out.append(Deviation("CVM memory", "no <locked/>: the memlock limit is below the CVM's memory"))
        if not self.passthrough and any(d.passthrough for d in lab.domains):
            out.append(Deviation("CVM PCI passthrough", "no <hostdev>: VFIO is not available on this host"))
        if self.lean:
            out.append(Deviation("guest devices", "no NIC boot ROMs; free guest memory is returned to the host "
                                                  "(balloon free page reporting)"))
        if not self.restart_on_crash and any(d.role == "cvm" for d in lab.domains):
            out.append(Deviation("CVM on_crash", "destroy, not restart: a restarted CVM's new taps would get IPv6 "
                                                 "addresses in the workstation's namespace; lab.up starts it again"))
        if self.tb_cache_mib:
            out.append(Deviation("TCG", f"a {self.tb_cache_mib} MiB translation cache per guest"))
        if not self.local_bridge_by_libvirt and any(n.ip for n in lab.networks):
            out.append(Deviation("NTNX-Local-Network", "192.168.5.1/24 is in the node namespace, and labkit makes the "
                                                       "bridge: libvirt would put the address and firewall rules on the workstation"))
        return out
