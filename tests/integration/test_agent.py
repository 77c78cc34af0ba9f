"""The guest agent on real guests: cold boots that always answer, a guest that never answers, an agent
killed in the middle of a request. Ten user VMs on one node (tests/topologies/agents.yaml)."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import libvirt
import pytest

from labkit import model, pipeline
from labkit.host.agent import Agent, AgentError

from ..conftest import REPO
from .conftest import invoke, labkit_leftovers, sh

TOPOLOGY = str(REPO / "tests/topologies/agents.yaml")
VMS = [f"ag{i}" for i in range(1, 11)]


@pytest.fixture(scope="module")
def domains():
    invoke("lab.down", "--lab", "agents")
    try:
        invoke("lab.up", "--no-verify", "--topology", TOPOLOGY)
        lab = model.resolve(pipeline.load(TOPOLOGY))  # its VM names are free on a test host: as resolved on it
        yield [lab.domain(vm) for vm in VMS]
    finally:  # the labs of later tests must find AHV's names free
        invoke("lab.down", "--lab", "agents")
    assert labkit_leftovers("agents") == []


def _hello_and_run(dom) -> str | None:
    """None when the guest answered both, else what went wrong."""
    try:
        with Agent(dom.name, dom.agent_socket) as agent:
            host = agent.wait_boot(90)
            result = agent.run("echo $((6 * 7)) $(hostname)", timeout=30)
    except AgentError as exc:
        return str(exc)
    if host != dom.hostname or result.output.split() != ["42", dom.hostname] or result.status:
        return f"{dom.name}: hello {host!r}, run {result}"
    return None


def test_fifty_cold_boots_each_answer_hello_and_run(domains):
    conn = libvirt.open("qemu:///system")
    failures, boots = [], 0
    try:
        with ThreadPoolExecutor(max_workers=len(domains)) as pool:
            for round_ in range(5):
                if round_:  # the first boot was lab.up's; then stop and start them all again
                    handles = [conn.lookupByName(d.name) for d in domains]
                    list(pool.map(lambda h: h.destroy(), handles))
                    list(pool.map(lambda h: h.create(), handles))
                failures += [f for f in pool.map(_hello_and_run, domains) if f]
                boots += len(domains)
    finally:
        conn.close()
    assert boots == 50 and failures == []


def test_a_guest_that_never_answers_fails_verify_in_time_naming_it_and_the_others_are_verified(domains):
    silent = domains[0]
    sh(f"virsh -c qemu:///system suspend {silent.name}")
    try:
        started = time.monotonic()
        run = invoke("lab.verify", "--topology", TOPOLOGY, "--timeout", "5", "--json", expect=4)
        took = time.monotonic() - started
    finally:
        sh(f"virsh -c qemu:///system resume {silent.name}")
    assert took < 5 + 5, f"lab.verify took {took:.1f} s with a 5 s timeout:\n{run.stderr}"
    assert f"VM {silent.name} did not come up within 5 s (its agent never answered)" in run.stderr
    report = json.loads(run.stdout)
    assert report["late"] == [silent.name] and not report["ok"]
    checks = report["checks"]
    others = [c for c in checks if c["from"] != silent.name and c["to"].split(" ")[0] != silent.name]
    assert others and all(c["ok"] for c in others), [c for c in others if not c["ok"]]
    assert all(not c["ok"] for c in checks if c["from"] == silent.name)


def test_an_agent_killed_mid_request_is_a_named_failure_and_a_new_one_answers(domains):
    dom = domains[1]
    started = time.monotonic()
    run = invoke("lab.console", dom.hostname, "--topology", TOPOLOGY, "--cmd", "kill -9 $(pidof labkit-agent); sleep 30", expect=1)
    assert time.monotonic() - started < 15
    assert f"the agent of {dom.name} restarted while it ran run; the request was lost" in run.stderr
    assert invoke("lab.console", dom.hostname, "--topology", TOPOLOGY, "--cmd", "hostname").stdout.strip() == dom.hostname
