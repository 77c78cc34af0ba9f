"""Changes the API makes, as tasks: checked at once against the lab as it stands (a 4xx for what
the control plane refuses), then queued and carried out in a worker thread under the lab's lock,
through the same road as acli's (commands.apply_change: a new effective state, planned and
applied), the change decided again there from the lab as it then is."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from .. import commands, tasklog
from ..errors import LabkitError
from .auth import Principal

LOG = logging.getLogger("labkit.api")


class Jobs:
    def __init__(self, workers: int = 4):
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="labkit-job")

    def change(self, who: Principal, make: Callable, operation: str, entities: tuple = (),
               before: Callable[[str], None] | None = None) -> tasklog.Task:
        """Queue `make(control) -> Change` for the principal's lab; `before(lab)` runs first, under the
        lab's lock (a guest asked to power itself off, before the lab powers it off)."""
        task = tasklog.put(who.lab, tasklog.new(operation, entities, user=who.user, client="api"))
        self._pool.submit(self._run, who, make, task, before)
        return task

    def action(self, who: Principal, act: Callable[[str], None], operation: str, entities: tuple = ()) -> tasklog.Task:
        """Queue a host action on the lab that changes nothing of its topology (reset, reboot)."""
        task = tasklog.put(who.lab, tasklog.new(operation, entities, user=who.user, client="api"))
        self._pool.submit(self._act, who, act, task)
        return task

    def _run(self, who: Principal, make: Callable, task: tasklog.Task, before) -> None:
        try:
            with commands.controlled(who.lab) as ctl:
                change = make(ctl)
                if before is not None:
                    before(who.lab)
                commands.apply_change(change, say=LOG.info, task=task, user=who.user, client="api")
        except LabkitError as exc:  # recorded by apply_change, or refused before it ran
            if not (found := tasklog.get(who.lab, task.uuid)) or not found.done:
                tasklog.finished(who.lab, task, error=str(exc))
        except Exception as exc:  # a bug: the task says so, the server goes on
            LOG.exception("task %s failed", task.uuid)
            tasklog.finished(who.lab, task, error=f"internal error ({type(exc).__name__}: {exc}); this is a labkit bug")

    def _act(self, who: Principal, act: Callable[[str], None], task: tasklog.Task) -> None:
        try:
            task = tasklog.running(who.lab, task)
            act(who.lab)
            tasklog.finished(who.lab, task)
        except LabkitError as exc:
            tasklog.finished(who.lab, task, error=str(exc))
        except Exception as exc:
            LOG.exception("task %s failed", task.uuid)
            tasklog.finished(who.lab, task, error=f"internal error ({type(exc).__name__}: {exc}); this is a labkit bug")

    def close(self) -> None:
        self._pool.shutdown(wait=True)
