"""Prism v4's VM power actions ($actions/NAME): (task operation, the power state the topology then
records or None, what is done on the host first or instead)."""

from __future__ import annotations

from .. import commands, state
from ..features import power


def _domain(lab: str, vm: str):
    return commands.find_domain(str(state.topology_file(lab)), vm)


def _on(verb: str):
    """features/power's action for `verb`, on the VM of the lab (the lab powers it off after a shutdown)."""
    return lambda lab, vm: power.BY_VERB[verb](_domain(lab, vm))


ACTIONS = {
    "power-on": ("VmSetPowerState", True, None),
    "power-off": ("VmSetPowerState", False, None),
    "shutdown": ("VmSetPowerState", False, _on("shutdown")),
    "guest-shutdown": ("VmSetPowerState", False, _on("shutdown")),
    "reboot": ("VmReboot", None, _on("reboot")),
    "guest-reboot": ("VmReboot", None, _on("reboot")),
    "reset": ("VmReset", None, _on("reset")),
    "power-cycle": ("VmPowerCycle", None, _on("power_cycle")),
}
