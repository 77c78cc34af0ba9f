"""A lab decided for one host: the resolved model, the libvirt documents rendered for it, and how
the host bent AHV's XML (the value lab.up plans from, and the memo keeps between commands)."""

from __future__ import annotations

from dataclasses import dataclass

from . import model
from .adaptation import Adaptation


@dataclass(frozen=True)
class Desired:
    """Everything decided for one lab on one host: the model, its documents, and what differs from AHV."""

    lab: model.Lab
    adapt: Adaptation
    docs: dict[str, str]

    @property
    def deviations(self) -> list[model.Deviation]:
        return list(self.lab.deviations) + self.adapt.deviations(self.lab)
