"""lab.diagram's graph (DOT) for the four-node dual-homed example, one uplink down and one
impaired: golden."""

from __future__ import annotations

import subprocess

from labkit import diagram, model, pipeline

from ..conftest import REPO


def test_the_dual_homed_cluster_drawn_with_a_link_down(golden):
    lab = model.resolve(pipeline.load(str(REPO / "examples/four-nodes-dual-tor.yaml")))
    source = diagram.dot(lab, frozenset({"quad-n2-eth3"}), {"quad-n1-eth2": "delay 50ms loss 2%"})
    golden(REPO / "tests/golden/diagram/four-nodes-dual-tor.dot", source)
    assert '"eth3-e99c" -- "quad-tor-b" [label="quad-n2-eth3 DOWN", color=red' in source
    assert 'label="quad-n1-eth2\\ndelay 50ms loss 2%", color=orange' in source
    for name in ("quad-tor", "quad-tor-b", "NTNX-node4-CVM", "br0-up-2b22", "labkit.quad.gw40"):
        assert name in source


def test_graphviz_lays_it_out():
    """graphviz comes with host.bootstrap (invoke test runs it first)."""
    lab = model.resolve(pipeline.load(str(REPO / "examples/three-nodes.yaml")))
    run = subprocess.run(["dot", "-Tsvg"], input=diagram.dot(lab), text=True, capture_output=True)
    assert run.returncode == 0 and "Warning" not in run.stderr, run.stderr
    assert run.stdout.count("<g id=\"clust") == 3  # one cluster per node
