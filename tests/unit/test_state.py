"""The per-lab lock and state files (in a temporary run directory)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from labkit import pipeline, state

from ..conftest import REPO


@pytest.fixture(autouse=True)
def run_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(state, "RUN_DIR", tmp_path)
    return tmp_path


def test_commands_on_one_lab_wait_for_each_other_and_other_labs_do_not():
    said, acquired = [], threading.Event()

    def second():
        with state.LabLock("seed", say=said.append):
            acquired.set()

    with state.LabLock("seed"):
        with state.LabLock("other"):  # another lab: no waiting
            pass
        waiter = threading.Thread(target=second)
        waiter.start()
        time.sleep(0.3)
        assert not acquired.is_set() and said == ["waiting for another labkit command on lab seed to finish"]
        state.lab_dir("seed").mkdir()  # the lab exists: its lock file stays
    waiter.join(5)
    assert acquired.is_set()
    assert (state.RUN_DIR / "seed.lock").exists()


def test_lock_file_goes_with_the_lab(run_dir):
    with state.LabLock("gone"):
        pass
    assert not (run_dir / "gone.lock").exists()


def test_effective_topology_round_trips():
    topo = pipeline.load(str(REPO / "examples/slb-vlans.yaml"))
    state.save_topology("slb", topo)
    again = pipeline.load(str(state.topology_file("slb")))
    assert again == topo


def test_render_out_writes_one_file_per_document(tmp_path):
    out = tmp_path / "xml"
    run = subprocess.run([sys.executable, "-m", "invoke", "lab.render", "--profile", "fidelity", "--out", str(out)],
                         cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in out.iterdir()) == ["NTNX-DRM-3060-G4-1-1-CVM.xml", "NTNX-Local-Network.xml",
                                                     "VM-Network.xml", "uvm32.xml"]
    assert "<locked/>" in (out / "NTNX-DRM-3060-G4-1-1-CVM.xml").read_text()


def test_the_lock_is_reentrant_in_one_thread_only(run_dir):
    """acli holds its lab's lock and lab.up inside takes it again; another thread still waits."""
    acquired = threading.Event()

    def other():
        with state.LabLock("seed", say=lambda _m: None):
            acquired.set()

    with state.LabLock("seed"):
        with state.LabLock("seed"):
            pass
        waiter = threading.Thread(target=other)
        waiter.start()
        time.sleep(0.3)
        assert not acquired.is_set()  # the inner exit did not release the outer hold
    waiter.join(5)
    assert acquired.is_set()


def test_intents_are_pruned_once_their_links_are_marked(run_dir):
    state.record_intent("seed", [("p1", "n1", None), ("p2", "n2", "labkit.seed.x")])
    state.prune_intents("seed", [("p1", "n1", None)])
    assert state.intents("seed") == [("p2", "n2", "labkit.seed.x")]
