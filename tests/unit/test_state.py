"""The per-lab lock and state files (in a temporary run directory)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time

import pytest

from labkit import pipeline, state
from labkit.errors import HostError

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


def effective_of(topo) -> state.Effective:
    addr = pipeline.addressed(topo, None)
    return state.Effective(state.topology_yaml(topo.name, addr.topo).encode(), addr.assigned.ledger.to_json().encode(), b"{}")


def test_effective_state_round_trips_and_turns_whole():
    topo = pipeline.load(str(REPO / "examples/slb-vlans.yaml"))
    first = effective_of(topo)
    state.save_effective("slb", first)
    assert state.read_effective("slb") == first
    again = pipeline.load(str(state.topology_file("slb")))
    assert again == pipeline.addressed(topo, None).topo  # MACs pinned, nothing else added
    second = state.Effective(first.topology.replace(b"slb", b"slb", 1), b'{"version": 1, "bindings": []}', b'{"vm:x": 2}')
    state.save_effective("slb", second)
    assert state.read_effective("slb") == second  # topology, ledger and stamps turn together
    assert len(list(state.lab_dir("slb").glob("effective.*"))) == 2  # this one and the one before


def test_all_digit_uplink_and_bridge_names_reload_as_names():
    text = (REPO / "examples/seed.yaml").read_text().replace("eth2", "'1234'").replace("br0:", "'5678':")
    text = text.replace("bridge: br0", "bridge: '5678'").replace("      passthrough:", "      bridge: '5678'\n      passthrough:")
    from labkit import topology

    topo = topology.parse(text, "digits.yaml")
    assert "1234" in topo.nodes[0].uplinks and "5678" in topo.nodes[0].bridges
    assert topology.parse(state.topology_yaml(topo.name, topo), "effective.yaml") == topo


def test_state_files_are_root_s_own_whatever_the_umask(run_dir):
    old = os.umask(0)
    try:
        state.save("acme", {"lab": "acme"})
        state.save_effective("acme", effective_of(pipeline.load(None).model_copy(update={"name": "acme"})))
    finally:
        os.umask(old)
    for path in [state.lab_dir("acme"), *state.lab_dir("acme").rglob("*")]:
        if not path.is_symlink():
            assert stat.S_IMODE(path.stat().st_mode) in (0o700, 0o600), path
    assert stat.S_IMODE(run_dir.stat().st_mode) & 0o022 == 0


def test_a_planted_symlink_or_a_foreign_file_is_not_read_and_not_followed(run_dir, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "target"
    elsewhere.write_text('{"lab": "planted"}')
    os.chmod(elsewhere, 0o600)
    folder = state.own_lab_dir("acme")
    (folder / "state.json").symlink_to(elsewhere)
    assert state.load("acme") == {}  # not followed
    state.save("acme", {"lab": "acme"})
    assert elsewhere.read_text() == '{"lab": "planted"}' and not (folder / "state.json").is_symlink()
    os.chmod(folder / "state.json", 0o644)  # readable by others: not trusted
    assert state.load("acme") == {}
    os.chmod(folder, 0o777)
    with pytest.raises(HostError, match="is not labkit's own directory"):
        state.save("acme", {"lab": "acme"})


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
