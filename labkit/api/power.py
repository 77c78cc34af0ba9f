"""Prism v4's VM power actions ($actions/NAME): (task operation, the power state the topology then
records or None, what is done on the host first or instead)."""

from __future__ import annotations

from .. import commands, state
from ..features import power


def _domain(lab: str, vm: str):
    return commands.find_domain(str(state.topology_file(lab)), vm)


def _shutdown(lab: str, vm: str) -> None:
    power.guest_poweroff(_domain(lab, vm))  # then the lab powers it off, whether it did or not


ACTIONS = {
    "power-on": ("VmSetPowerState", True, None),
    "power-off": ("VmSetPowerState", False, None),
    "shutdown": ("VmSetPowerState", False, _shutdown),
    "guest-shutdown": ("VmSetPowerState", False, _shutdown),
    "reboot": ("VmReboot", None, lambda lab, vm: power.guest_reboot(_domain(lab, vm))),
    "guest-reboot": ("VmReboot", None, lambda lab, vm: power.guest_reboot(_domain(lab, vm))),
    "reset": ("VmReset", None, lambda lab, vm: power.reset(_domain(lab, vm))),
    "power-cycle": ("VmPowerCycle", None, lambda lab, vm: power.power_cycle(_domain(lab, vm))),
}
