"""memo.py: a remembered decision is used only for the very inputs it was decided from, read from
a file only root wrote, as JSON; it is stored only when the inputs still hold at the end."""

from __future__ import annotations

import os
import pickle
import shutil
import stat
from dataclasses import replace

import pytest

from labkit import memo, pipeline, state
from labkit.hoststate import HostState

from ..conftest import REPO
from .test_plan import HOST_ADAPT, recorded


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(state, "RUN_DIR", tmp_path / "run")
    return tmp_path / "run"


@pytest.fixture
def seed(tmp_path):
    source = tmp_path / "topologies" / "seed.yaml"
    source.parent.mkdir()
    shutil.copy(REPO / "examples/seed.yaml", source)
    return str(source)


def decided(inputs: memo.Inputs, host: HostState | None = None) -> tuple[pipeline.Desired, object]:
    host = host or recorded("debian-fresh")
    desired = pipeline.desire(pipeline.parse_inputs(inputs), host, HOST_ADAPT)
    return desired, host.facts_for(desired.lab.name)


def remembered(source: str | None, profile: str | None = None) -> memo.Inputs:
    inputs = memo.read("seed", source, profile)
    desired, facts = decided(inputs)
    assert memo.remember(inputs, facts, desired)
    return inputs


def test_a_decision_is_recalled_for_the_same_inputs_only(run_dir, seed):
    inputs = remembered(seed)
    again = memo.recall(memo.read("seed", seed, None))
    assert again is not None and again.desired == decided(inputs)[0] and again.facts == decided(inputs)[1]
    assert memo.recall(memo.read("seed", seed, "fidelity")) is None  # another profile is another decision
    assert memo.recall(memo.read("seed", None, None)) is None  # another file


def test_an_edit_that_keeps_size_and_time_is_seen(run_dir, seed):
    """rsync -a keeps a file's size and modification time: the key is the content."""
    remembered(seed)
    before = os.stat(seed)
    text = open(seed).read().replace("vcpus: 8", "vcpus: 6")
    with open(seed, "w") as out:
        out.write(text)
    os.utime(seed, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(seed).st_size == before.st_size and os.stat(seed).st_mtime_ns == before.st_mtime_ns
    assert memo.recall(memo.read("seed", seed, None)) is None


def test_a_changed_effective_state_or_labkit_is_decided_again(run_dir, seed, monkeypatch):
    inputs = remembered(seed)
    effective = state.Effective(b"name: seed\n", b'{"version": 1, "bindings": []}', b"{}")
    state.save_effective("seed", effective)  # acli or manage-ovs changed the lab
    assert memo.recall(memo.read("seed", seed, None)) is None
    assert memo.recall(replace(inputs, code="labkit upgraded")) is None


def test_nothing_is_stored_when_the_file_changed_while_the_lab_was_applied(run_dir, seed):
    """An edit during the image build, the lock wait or apply is decided by the next lab.up."""
    inputs = memo.read("seed", seed, None)
    desired, facts = decided(inputs)
    with open(seed, "a") as out:
        out.write("# edited while lab.up ran\n")
    assert not memo.remember(inputs, facts, desired)
    assert memo.recall(memo.read("seed", seed, None)) is None
    assert not (state.lab_dir("seed") / memo.MEMO).exists()


def test_the_memo_is_json_root_s_own_and_never_followed(run_dir, seed, tmp_path):
    old = os.umask(0)
    try:
        remembered(seed)
    finally:
        os.umask(old)
    path = state.lab_dir("seed") / memo.MEMO
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.read_bytes().startswith(b"{")
    os.chmod(path, 0o644)  # anyone could read (or, 0o666, have written) it: not trusted
    assert memo.recall(memo.read("seed", seed, None)) is None
    path.write_bytes(pickle.dumps({"key": "x"}))
    os.chmod(path, 0o600)
    assert memo.recall(memo.read("seed", seed, None)) is None  # not JSON: ignored, nothing run
    target = tmp_path / "elsewhere"
    target.write_text("theirs")
    path.unlink()
    path.symlink_to(target)  # a symlink planted in the memo's place
    assert memo.recall(memo.read("seed", seed, None)) is None
    remembered(seed)  # replaces the link, writes nothing through it
    assert target.read_text() == "theirs" and not path.is_symlink()
    assert memo.recall(memo.read("seed", seed, None)) is not None


def test_lab_down_forgets_it(run_dir, seed):
    remembered(seed)
    state.forget("seed")
    assert memo.recall(memo.read("seed", seed, None)) is None


def test_the_lab_name_comes_from_its_line_without_parsing():
    assert memo.lab_name_in(b"# x\nname: acme  # the lab\nnodes: []\n") == "acme"
    assert memo.lab_name_in(b"name: 'acme'\n") == "acme"
    assert memo.lab_name_in(b"{name: acme, nodes: []}\n") is None  # then the file is parsed
    assert memo.lab_name_in(b"name: a\nname: b\n") is None
    assert memo.lab_name_in(b"nodes:\n  - name: node1\n") is None


def test_the_remembered_lab_stands_only_for_the_facts_it_was_resolved_from(run_dir):
    inputs = remembered(None)
    found = memo.recall(memo.read("seed", None, None))
    facts = found.facts
    lab, addr = pipeline._resolve(found, None, lambda: pipeline.parse_inputs(inputs), facts)
    assert addr is None and lab is found.desired.lab  # nothing loaded, nothing resolved
    assert pipeline._rendered(found, lab, HOST_ADAPT) is found.desired  # nothing rendered

    other = replace(facts, taken_bridges=facts.taken_bridges | {"br0"})  # someone took br0 since
    lab, addr = pipeline._resolve(found, None, lambda: pipeline.parse_inputs(inputs), other)
    assert addr is not None and "br0" not in {b.name for b in lab.bridges}
    assert pipeline._rendered(found, lab, HOST_ADAPT) is not found.desired
    strict = replace(HOST_ADAPT, locked_memory=True)  # the host's abilities changed: rendered again
    fresh = pipeline._rendered(found, found.desired.lab, strict)
    assert fresh is not found.desired and fresh.docs != found.desired.docs
