"""A lab's tasks: every change made through its control plane (the REST API's, acli's), as Prism
keeps them (Ergon): QUEUED -> RUNNING -> SUCCEEDED or FAILED, with the entities it touched.

Kept in /run/labkit/<lab>/tasks.json (root's own, 0600), the newest KEEP; each update is a read,
change and write under a lock of the file's own (a change's task is queued while another change
holds the lab's lock). The REST API serves them (`/api/prism/v4.x/config/tasks`, v2.0's and v3's
task calls); acli's changes are tasks too, so the API and the web page show them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
import uuid
from dataclasses import asdict, dataclass, replace

from . import state

KEEP = 500
FILE = "tasks.json"


@dataclass(frozen=True)
class Entity:
    uuid: str
    rel: str  # v4's kind: networking:config:subnet, vmm:ahv:config:vm, vmm:ahv:config:vm:nic, clustermgmt:config:host
    name: str = ""


@dataclass(frozen=True)
class Task:
    uuid: str
    operation: str  # Ergon's operation names, as Prism shows them: VmCreate, VmSetPowerState, SubnetCreate, ...
    status: str = "QUEUED"  # QUEUED, RUNNING, SUCCEEDED, FAILED
    created: float = 0.0
    started: float | None = None
    completed: float | None = None
    entities: tuple[Entity, ...] = ()
    error: str = ""
    user: str = ""
    client: str = ""  # api, acli, web
    progress: int = 0

    @property
    def done(self) -> bool:
        return self.status in ("SUCCEEDED", "FAILED")


def new(operation: str, entities: tuple[Entity, ...] = (), user: str = "", client: str = "") -> Task:
    return Task(str(uuid.uuid4()), operation, created=time.time(), entities=entities, user=user, client=client)


@contextlib.contextmanager
def _locked(lab: str):
    fd = os.open(state.own_lab_dir(lab) / f".{FILE}.lock", os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def listed(lab: str) -> list[Task]:
    """The lab's tasks, newest first."""
    data = state.read_private(state.lab_dir(lab) / FILE)
    if not data:
        return []
    tasks = []
    for raw in json.loads(data)["tasks"]:
        raw["entities"] = tuple(Entity(**e) for e in raw["entities"])
        tasks.append(Task(**raw))
    return tasks


def get(lab: str, task_uuid: str) -> Task | None:
    return next((t for t in listed(lab) if t.uuid == task_uuid), None)


def put(lab: str, task: Task) -> Task:
    """Record the task (new, or its new state)."""
    with _locked(lab):
        tasks = [t for t in listed(lab) if t.uuid != task.uuid]
        tasks = sorted([task, *tasks], key=lambda t: t.created, reverse=True)[:KEEP]
        state.write_private(state.lab_dir(lab) / FILE, json.dumps({"version": 1, "tasks": [asdict(t) for t in tasks]}))
    return task


def running(lab: str, task: Task) -> Task:
    return put(lab, replace(task, status="RUNNING", started=time.time(), progress=50))


def finished(lab: str, task: Task, error: str = "", entities: tuple[Entity, ...] | None = None) -> Task:
    return put(lab, replace(task, status="FAILED" if error else "SUCCEEDED", completed=time.time(), error=error,
                            progress=100, entities=task.entities if entities is None else entities,
                            started=task.started or time.time()))

