"""Every bad topology under tests/errors/ fails with exactly its golden message (file:line: key: advice)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from labkit import topology
from labkit.errors import TopologyError

from ..conftest import REPO

CASES = sorted((REPO / "tests/errors").glob("*.yaml"))


# Problems with the file as a whole (not YAML, not text, hostile structure) have a line but no key.
WHOLE_FILE = {"alias_bomb", "control_character", "deep_nesting", "empty_file", "not_utf8", "not_yaml",
              "self_referencing_alias", "tab_indentation", "yaml_tag"}


def test_corpus_is_large_enough():
    assert len(CASES) >= 50


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_bad_topology(case: Path, golden):
    with pytest.raises(TopologyError) as info:
        topology.load(case.relative_to(REPO))
    golden(case.with_suffix(".err"), str(info.value) + "\n")


def test_every_problem_names_file_line_and_key():
    for case in CASES:
        try:
            topology.load(case.relative_to(REPO))
        except TopologyError as exc:
            for problem in exc.problems:
                assert problem.file.endswith(case.name) and problem.line >= 1, problem
                assert bool(problem.key) == (case.stem not in WHOLE_FILE), problem


def test_cli_prints_one_sentence_per_problem_and_exits_2():
    case = REPO / "tests/errors/bond_member_not_uplink.yaml"
    run = subprocess.run([sys.executable, "-m", "invoke", "lab.render", "--topology", str(case)],
                         cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    assert f"{case}:11: nodes[0].bridges.br0.bond.interfaces[0]: 'eth2' is not an uplink of node node1" in run.stderr


def test_missing_file_is_a_topology_error():
    with pytest.raises(TopologyError, match="cannot be read"):
        topology.load("/nonexistent/lab.yaml")


def test_default_topology_is_valid_and_is_the_seed():
    topo = topology.load(None)
    node = topo.nodes[0]
    assert str(node.host_ip) == "10.59.31.77/23" and str(node.gateway) == "10.59.30.1"
    assert node.bridges["br0"].bond.name == "bond0" and node.bridges["br0"].bond.interfaces == ["eth2", "eth3"]
    assert node.uplinks == {"eth0": "1g", "eth1": "1g", "eth2": "10g", "eth3": "10g"}


def test_hostile_files_fail_fast_and_small(tmp_path):
    """Issue 12, item 2: each hostile input is a file:line error in bounded time and memory."""
    import resource
    import time

    huge = tmp_path / "huge.yaml"
    huge.write_text("name: big\nnodes:\n" + "  - {name: n}\n" * 100_000)
    bomb = tmp_path / "bomb.yaml"  # ten levels: 10^10 items if expanded
    bomb.write_text("name: b\na0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 10)))
    for path, message in ((huge, r":1: is 1400017 bytes; a topology file is at most 1024 KiB"),
                          (bomb, "uses a YAML anchor or alias")):
        before, start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.monotonic()
        with pytest.raises(TopologyError, match=message):
            topology.load(path)
        assert time.monotonic() - start < 1.0
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 * 1024  # KiB
