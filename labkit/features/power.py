"""What a VM's power actions do on the host besides the lab's topology: a guest asked to power
itself off or reboot (through its agent: the built-in guest has no ACPI), a domain reset or
power-cycled through libvirt. AHV's vm.shutdown / vm.reboot / vm.reset / vm.power_cycle and
Prism's $actions use these; powering on and off is a change of the topology (vm.on, vm.off)."""

from __future__ import annotations

import time

from ..errors import HostError
from ..host.agent import Agent, AgentError
from ..model import Domain

GRACE_SECONDS = 30.0  # AHV waits for a guest to shut down, then reports it did not


def guest_poweroff(dom: Domain, timeout: float = GRACE_SECONDS) -> bool:
    """Ask the guest to power itself off and wait until it has: its init stops, its disks are
    synced, its kernel says "Power down" (the built-in guest has no ACPI to switch QEMU off: its
    agent then stops answering, and the lab powers the halted domain off). False when it is still
    up after `timeout` (the caller powers it off, as AHV's shutdown does after its timeout)."""
    from ..host.virt import Virt

    _ask(dom, "sync; sleep 0.2; poweroff -f")
    deadline = time.monotonic() + timeout
    with Virt() as virt:
        while virt.is_active(dom.name) and _answers(dom):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.3)
    return True


def _answers(dom: Domain) -> bool:
    try:
        with Agent(dom.name, dom.agent_socket) as agent:
            agent.run("true", timeout=1)
        return True
    except AgentError:
        return False


def guest_reboot(dom: Domain) -> None:
    """Ask the guest to reboot itself (its agent answers again once it is back)."""
    _ask(dom, "sync; sleep 0.2; reboot -f")


def reset(dom: Domain) -> None:
    from ..host.virt import Virt

    with Virt() as virt:
        virt.reset_domain(dom.name)


def power_cycle(dom: Domain) -> None:
    """Off and on again: a new QEMU, the same definition."""
    from ..host.virt import Virt

    with Virt() as virt:
        virt.stop_domains([dom.name])
        virt.start_domains([dom.name], say=lambda _m: None)


def pause(dom: Domain) -> None:
    from ..host.virt import Virt

    with Virt() as virt:
        virt.suspend_domain(dom.name)


def resume(dom: Domain) -> None:
    from ..host.virt import Virt

    with Virt() as virt:
        virt.resume_domain(dom.name)


def shutdown(dom: Domain) -> str:
    """AHV's graceful shutdown: the guest powers itself off; one that does not within GRACE_SECONDS
    is powered off by the lab next (the caller's change), and this says so. (AHV's own words for it
    are not known.)"""
    if guest_poweroff(dom):
        return ""
    return f"{dom.ahv_name or dom.name}: the guest did not power off within {GRACE_SECONDS:.0f} s; powering it off"


# acli's verbs and what each does to one running domain (a message, or None)
BY_VERB = {"shutdown": shutdown, "reboot": guest_reboot, "reset": reset, "power_cycle": power_cycle,
           "pause": pause, "resume": resume}


def _ask(dom: Domain, command: str) -> None:
    try:
        with Agent(dom.name, dom.agent_socket) as agent:
            agent.run(f"({command}) </dev/null >/dev/null 2>&1 &", timeout=5)  # it answers before it acts
    except AgentError as exc:
        raise HostError(f"VM {dom.hostname or dom.name} did not take the request ({exc}); is it running its agent?") from None
