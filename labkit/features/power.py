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
    """Ask the guest to power itself off and wait until it has; False when it did not in time
    (the caller then powers it off, as AHV's shutdown does after its timeout)."""
    from ..host.virt import Virt

    _ask(dom, "poweroff -f")
    deadline = time.monotonic() + timeout
    with Virt() as virt:
        while virt.is_active(dom.name):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
    return True


def guest_reboot(dom: Domain) -> None:
    """Ask the guest to reboot itself (its agent answers again once it is back)."""
    _ask(dom, "reboot -f")


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


def _ask(dom: Domain, command: str) -> None:
    try:
        with Agent(dom.name, dom.agent_socket) as agent:
            agent.run(f"sync; {command} &", timeout=5)
    except AgentError as exc:
        raise HostError(f"VM {dom.hostname or dom.name} did not take the request ({exc}); is it running its agent?") from None
