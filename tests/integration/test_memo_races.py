"""The memo is exact or absent, on a real lab: an edit made while lab.up applies is not hidden under
the old decision, and an acli change made while a lab.up waits for the lab's lock is not undone."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading

import pytest

from labkit import commands, state

from ..conftest import REPO
from .conftest import invoke, labkit_leftovers, sh

LAB = "health"


@pytest.fixture
def topology(tmp_path):
    path = tmp_path / "health.yaml"
    shutil.copy(REPO / "tests/topologies/health.yaml", path)
    invoke("lab.down", "--lab", LAB)
    yield path
    invoke("lab.down", "--lab", LAB)
    assert labkit_leftovers(LAB) == []


def test_an_edit_made_while_lab_up_applies_is_applied_by_the_next(topology):
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "lab.up", "--topology", str(topology), "--no-verify"],
                            cwd=REPO, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "applying" in line:  # decided; now creating the lab
            topology.write_text(topology.read_text().replace("nics: [{network: web}]", "memory: 160MiB, nics: [{network: web}]"))
    assert proc.wait() == 0, "".join(seen)
    assert any("the topology file changed while lab.up ran" in line for line in seen), "".join(seen)
    again = invoke("lab.up", "--topology", str(topology), "--no-verify")
    assert "nothing to do" not in again.stderr and "update domain: web1" in again.stderr, again.stderr
    assert "<memory unit='KiB'>163840</memory>" in sh("virsh -c qemu:///system dumpxml web1")


def test_an_acli_change_made_while_lab_up_waits_is_not_undone(topology):
    invoke("lab.up", "--topology", str(topology), "--no-verify")
    invoke("lab.up", "--topology", str(topology), "--no-verify")  # remembered now
    effective = str(state.topology_file(LAB))
    waiting = threading.Event()
    with state.LabLock(LAB):
        proc = subprocess.Popen([sys.executable, "-m", "invoke", "lab.up", "--topology", effective, "--no-verify"],
                                cwd=REPO, stderr=subprocess.PIPE, text=True)
        reader = threading.Thread(target=lambda: [waiting.set() for line in proc.stderr if "waiting for another" in line])
        reader.start()
        assert waiting.wait(30), "lab.up did not wait for the lab's lock"
        with commands.controlled(LAB) as ctl:  # acli, while lab.up waits
            commands.apply_change(ctl.vm_create("late"), say=lambda _m: None)
    assert proc.wait(120) == 0
    reader.join()
    assert "late" in sh("virsh -c qemu:///system list --all --name").split()
    assert any(vm.name == "late" for vm in commands.control_of(LAB).vms())
