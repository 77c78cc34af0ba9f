"""Every hang is bounded: with ovsdb-server, ovs-vswitchd or libvirtd stopped (SIGSTOP), a command
ends within the host deadline with one sentence naming the system, and leaves the host-wide names
lock free for every other lab's lab.up. The daemons are continued whatever happens."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time

import pytest

from ..conftest import REPO
from .conftest import invoke, labkit_leftovers, sh

DEADLINE = 4
LAB = "health"
TOPOLOGY = str(REPO / "tests/topologies/health.yaml")


@contextlib.contextmanager
def stopped(daemon: str):
    pid = int(sh(f"pgrep -xo {daemon}").split()[0])
    os.kill(pid, signal.SIGSTOP)
    try:
        yield pid
    finally:
        os.kill(pid, signal.SIGCONT)


def bounded_run(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "invoke", *args], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "LABKIT_HOST_DEADLINE": str(DEADLINE)})
    return run, time.monotonic() - started


def names_lock_is_free() -> bool:
    fd = os.open("/run/labkit/names.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


@pytest.fixture(scope="module")
def lab():
    invoke("lab.down", "--lab", LAB)
    invoke("lab.up", "--topology", TOPOLOGY, "--no-verify")
    yield
    invoke("lab.down", "--lab", LAB)
    assert labkit_leftovers(LAB) == []


@pytest.mark.parametrize("daemon, system", [("ovsdb-server", "OVSDB"), ("libvirtd", "libvirt")])
def test_a_stopped_daemon_is_one_sentence_within_the_deadline(lab, daemon, system):
    with stopped(daemon):
        run, took = bounded_run("lab.up", "--topology", f"/run/labkit/{LAB}/effective/topology.yaml")
        assert names_lock_is_free()
    assert run.returncode != 0 and took < DEADLINE + 15, (took, run.stderr)
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith(f"labkit: {system} did not answer within {DEADLINE} s"), run.stderr
    assert "Traceback" not in run.stderr
    invoke("lab.up", "--topology", f"/run/labkit/{LAB}/effective/topology.yaml", "--no-verify")  # and then it converges


def test_a_stopped_ovs_vswitchd_is_one_sentence_within_the_deadline(lab):
    with stopped("ovs-vswitchd"):
        run, took = bounded_run("lab.status", "--lab", LAB)
    assert run.returncode != 0 and took < DEADLINE + 15, (took, run.stderr)
    assert "ovs-vswitchd did not answer ovs-ofctl" in run.stderr and "Traceback" not in run.stderr
