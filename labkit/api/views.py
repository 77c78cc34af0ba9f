"""What the API serves of a lab, read without the lab's lock: its control plane as its effective
state stands (read whole: state.read_effective), shaped once per state and kept until the state
turns (a change by any road: the API, acli, lab.up), so that reads cost microseconds."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from functools import cached_property

from .. import control, ledger, state, topology
from ..errors import HostError
from . import shapes


@dataclass
class View:
    lab: str
    ctl: control.Control

    @cached_property
    def host_uuids(self) -> dict[str, str]:
        return {h.name: h.uuid for h in self.ctl.hosts()}

    @cached_property
    def subnets(self) -> list[dict]:
        return [shapes.subnet(self.lab, net) for net in self.ctl.networks()]

    @cached_property
    def vms(self) -> list[dict]:
        return [shapes.vm(self.lab, vm, self.host_uuids) for vm in self.ctl.vms()]

    @cached_property
    def hosts(self) -> list[dict]:
        return [shapes.host(self.lab, h) for h in self.ctl.hosts()]

    @cached_property
    def cluster(self) -> dict:
        return shapes.cluster(self.lab, self.ctl)

    cache: dict = field(default_factory=dict)  # a handler's own shaped answers, for this state


class Views:
    def __init__(self):
        self._views: dict[str, tuple[str, View]] = {}
        self._lock = threading.Lock()

    def current(self, lab: str) -> View | None:
        """The lab's view if it was made for the state that stands now (None otherwise): no reading."""
        try:
            version = os.readlink(state.lab_dir(lab) / state.EFFECTIVE)
        except OSError:
            return None
        cached = self._views.get(lab)
        return cached[1] if cached and cached[0] == version else None

    def of(self, lab: str) -> View:
        """The lab's view as its effective state stands now (HostError if the lab is not up)."""
        try:
            version = os.readlink(state.lab_dir(lab) / state.EFFECTIVE)
        except OSError:
            raise HostError(f"lab {lab} is not up") from None
        with self._lock:
            cached = self._views.get(lab)
        if cached and cached[0] == version:
            return cached[1]
        effective = state.read_effective(lab)
        if effective is None:
            raise HostError(f"lab {lab} is not up")
        ctl = control.Control(topology.load_bytes(effective.topology, state.topology_file(lab)),
                              ledger.Ledger.from_json(effective.ledger), json.loads(effective.stamps))
        view = View(lab, ctl)
        with self._lock:
            self._views[lab] = (version, view)
        return view
