"""labkit's pipeline, one call a line: load -> validate -> resolve -> render -> observe -> plan -> apply."""

from __future__ import annotations

from dataclasses import dataclass

from . import model, plan, render, topology
from .hoststate import HostState


@dataclass(frozen=True)
class Desired:
    """Everything decided for one lab on one host: the model, its documents, and what differs from AHV."""

    lab: model.Lab
    adapt: render.Adaptation
    docs: dict[str, str]

    @property
    def deviations(self) -> list[model.Deviation]:
        return list(self.lab.deviations) + self.adapt.deviations(self.lab)


def load(path: str | None, profile: str | None = None) -> topology.Topology:
    topo = topology.load(path)  # parse + validate (raises TopologyError with every problem)
    return topo.model_copy(update={"profile": profile}) if profile else topo


def desire(topo: topology.Topology, host: HostState, adapt: render.Adaptation) -> Desired:
    lab = model.resolve(topo, host.facts_for(topo.name))  # resolve: final names, given what the host holds
    docs = render.render_all(lab, adapt)  # render: libvirt XML, as this host can run it
    return Desired(lab, adapt, docs)


def plan_up(desired: Desired, host: HostState) -> plan.Plan:
    return plan.plan(desired.lab, host, desired.docs)  # plan: the diff, ordered
