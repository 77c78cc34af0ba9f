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


def test_corpus_is_large_enough():
    assert len(CASES) >= 20


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
                assert problem.key or problem.line, problem


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
