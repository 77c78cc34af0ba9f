"""memo.py: a remembered decision is used only while everything it was decided from holds."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace

import pytest

from labkit import memo, pipeline, state
from labkit.hoststate import HostState

from ..conftest import REPO
from .test_plan import HOST_ADAPT, recorded


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(memo, "RUN_DIR", tmp_path)
    monkeypatch.setattr(state, "RUN_DIR", tmp_path)
    return tmp_path


@pytest.fixture
def seed(tmp_path):
    source = tmp_path / "topologies" / "seed.yaml"
    source.parent.mkdir()
    shutil.copy(REPO / "examples/seed.yaml", source)
    return str(source)


def decided(source: str | None, host: HostState | None = None) -> tuple[pipeline.Desired, object]:
    host = host or recorded("debian-fresh")
    desired = pipeline.desire(pipeline.load(source), host, HOST_ADAPT)
    return desired, host.facts_for(desired.lab.name)


def test_a_decision_is_recalled_for_the_same_file_and_profile(run_dir, seed):
    desired, facts = decided(seed)
    memo.remember(seed, None, facts, desired)
    again = memo.recall(seed, None)
    assert again is not None and again.desired == desired and again.facts == facts
    assert memo.recall(seed, "fidelity") is None  # another profile is another decision
    assert memo.recall(None, None) is None  # another file


def test_a_changed_file_effective_topology_or_labkit_is_decided_again(run_dir, seed, monkeypatch):
    desired, facts = decided(seed)
    memo.remember(seed, None, facts, desired)
    with open(seed, "a") as out:
        out.write("# edited\n")
    assert memo.recall(seed, None) is None
    memo.remember(seed, None, facts, desired)
    state.topology_file(desired.lab.name).write_text("name: seed\n")  # acli or manage-ovs changed the lab
    assert memo.recall(seed, None) is None
    memo.remember(seed, None, facts, desired)
    assert memo.recall(seed, None) is not None
    monkeypatch.setattr(memo, "_code", lambda: b"labkit upgraded")
    assert memo.recall(seed, None) is None


def test_only_root_s_own_intact_files_are_unpickled(run_dir):
    desired, facts = decided(None)
    memo.remember(None, None, facts, desired)
    (path,) = run_dir.glob("*/decided-*.pickle")
    assert path.stat().st_mode & 0o777 == 0o600
    os.chmod(path, 0o666)  # anyone could have written it: pickle would run their code
    assert memo.recall(None, None) is None
    os.chmod(path, 0o600)
    path.write_bytes(b"not a pickle")
    assert memo.recall(None, None) is None


def test_one_decision_per_lab_and_lab_down_forgets_it(run_dir, seed):
    desired, facts = decided(seed)
    memo.remember(seed, None, facts, desired)
    memo.remember(seed, "lab", facts, desired)
    assert len(list(state.lab_dir(desired.lab.name).glob("decided-*"))) == 1
    state.forget(desired.lab.name)
    assert memo.recall(seed, "lab") is None


def test_the_remembered_lab_stands_only_for_the_facts_it_was_resolved_from(run_dir):
    desired, facts = decided(None)
    memo.remember(None, None, facts, desired)
    remembered = memo.recall(None, None)
    lab, topo = pipeline._resolve(remembered, None, None, facts)
    assert topo is None and lab is remembered.desired.lab  # nothing loaded, nothing resolved
    assert pipeline._rendered(remembered, lab, HOST_ADAPT) is remembered.desired  # nothing rendered

    other = replace(facts, taken_bridges=facts.taken_bridges | {"br0"})  # someone took br0 since
    lab, topo = pipeline._resolve(remembered, None, None, other)
    assert topo is not None and "br0" not in {b.name for b in lab.bridges}
    assert pipeline._rendered(remembered, lab, HOST_ADAPT) is not remembered.desired
    strict = replace(HOST_ADAPT, locked_memory=True)  # the host's abilities changed: rendered again
    fresh = pipeline._rendered(remembered, remembered.desired.lab, strict)
    assert fresh is not remembered.desired and fresh.docs != remembered.desired.docs
