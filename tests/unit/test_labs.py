"""lab.list from recorded host states: each lab's state, nodes, VMs and the names it uses."""

from __future__ import annotations

from dataclasses import replace

from labkit import labs, pipeline, render

from ..conftest import REPO
from .hostsim import state_after
from .test_plan import recorded

ADAPT = render.Adaptation(domain_type="qemu", cpu_passthrough=False, locked_memory=False, passthrough=False)


def test_every_lab_with_its_state_and_names(golden):
    host = recorded("debian-fresh")
    seed = pipeline.desire(pipeline.load(None), host, ADAPT)
    host = state_after(seed.lab, seed.docs, host)
    pair = pipeline.desire(pipeline.load(str(REPO / "examples/two-nodes.yaml")), host, ADAPT)
    host = state_after(pair.lab, pair.docs, host)
    # one of pair's VMs is not running; lab "gone" left a namespace behind (a killed lab.down)
    host = replace(host, domains=tuple(replace(d, active=d.name != "b1") for d in host.domains),
                   namespaces=host.namespaces + (replace(host.namespaces[0], name="labkit.gone.node1", lab="gone"),))
    # lab "old" was saved by another labkit version: listed, with why, and the others still are
    host = replace(host, namespaces=host.namespaces + (replace(host.namespaces[0], name="labkit.old.node1", lab="old"),))
    found = labs.summarize(host, {"seed": seed.lab, "pair": pair.lab},
                           {"old": "its saved topology does not load (topology.yaml:48: images[1].size: too small)"})
    assert [(lab.name, lab.state, lab.nodes, lab.vms_running, lab.vms) for lab in found] == [
        ("gone", "left over", 0, 0, 0), ("old", "unreadable", 0, 0, 0), ("pair", "partial", 2, 1, 2),
        ("seed", "up", 1, 1, 1)]
    golden(REPO / "tests/golden/labs/list.txt", labs.table(found) + "\n")
    assert labs.table([]) == "no labs on this host"
