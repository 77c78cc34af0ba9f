"""User-facing errors: one sentence each, printed without a traceback."""

from __future__ import annotations

from dataclasses import dataclass


class LabkitError(Exception):
    """A failure the user can act on; tasks print it and exit with `exit_code`."""

    exit_code = 1


@dataclass(frozen=True)
class Problem:
    """One problem in a topology file, located as precisely as the parser allows."""

    file: str
    line: int
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}"
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class TopologyError(LabkitError):
    """Every problem found in a topology file (validation collects them all)."""

    exit_code = 2

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class PlanError(LabkitError):
    """The plan cannot be carried out safely (e.g. a name held by a foreign object)."""

    exit_code = 3


class HostError(LabkitError):
    """The host is missing something labkit needs (a service, a package, a capability)."""

    exit_code = 4
