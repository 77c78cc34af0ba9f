"""lab.break and lab.check on real labs: every scenario of the catalogue is applied through the
pipeline, seen by lab.check (the symptoms its file declares: failed probes from inside the guests,
bonds as OVS reports them, objects that differ from the design), fixed by the commands its answer
gives (run as a trainee would type them), and, broken again, repaired by lab.up of the original
topology. A rogue DHCP server is heard by a guest on another node; nothing of a fault is left."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from labkit import breaking, commands

from ..conftest import REPO
from .conftest import invoke, lab_up_for_module, sh

LABS = {"faults": str(REPO / "tests/topologies/faults.yaml"), "faultpair": str(REPO / "tests/topologies/faultpair.yaml")}
ON_FAULTPAIR = {"uplink-down-one-switch"}
SEED = 7
SETTLE = 45.0  # seconds for a fault's symptoms to show (LACP times out after 3 s) and for a fix to settle


@pytest.fixture(scope="module")
def faults_lab():
    yield from lab_up_for_module("faults", LABS["faults"])


@pytest.fixture(scope="module")
def faultpair_lab():
    yield from lab_up_for_module("faultpair", LABS["faultpair"])


def check(lab: str) -> subprocess.CompletedProcess:
    run = subprocess.run([sys.executable, "-m", "invoke", "lab.check", "--lab", lab], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode in (0, 1) and "Traceback" not in run.stderr, run.stderr
    return run


def check_until(lab: str, done, what: str) -> str:
    deadline = time.monotonic() + SETTLE
    while True:
        run = check(lab)
        if done(run):
            return run.stdout
        assert time.monotonic() < deadline, f"lab.check never showed {what}:\n{run.stdout}"
        time.sleep(1)


def applied(lab: str, scenario: str) -> breaking.Fault:
    invoke("lab.break", scenario, "--lab", lab, "--seed", str(SEED))
    fault = commands.faults(lab)[-1]
    assert fault.scenario == scenario and fault.seed == SEED
    return fault


def reported(scenario: breaking.Scenario, fault: breaking.Fault):
    facts = {k: re.escape(v) for k, v in fault.facts.items()}
    patterns = [re.compile(p.format_map(facts), re.M) for p in scenario.reports]
    return lambda run: run.returncode == 1 and all(p.search(run.stdout) for p in patterns)


def lab_for(scenario: str, request) -> str:
    lab = "faultpair" if scenario in ON_FAULTPAIR else "faults"
    request.getfixturevalue(f"{lab}_lab")
    return lab


@pytest.mark.parametrize("name", sorted(breaking.catalogue()))
def test_a_scenario_is_seen_fixed_by_its_answer_and_repaired_by_lab_up(name, request):
    lab = lab_for(name, request)
    scenario = breaking.scenario(name)
    assert check(lab).returncode == 0  # the lab starts whole
    fault = applied(lab, name)
    shown = check_until(lab, reported(scenario, fault), f"{scenario.reports}")
    for line in shown.splitlines()[2:]:  # what is broken, never how to fix it
        assert not re.search(r"ovs-vsctl|ip link|ip route|want|tag=", line), line
    answers = invoke("lab.break", "--answers", "--lab", lab).stdout
    for command in fault.fix(scenario):
        assert command in answers
        sh(command)  # as the trainee types it
    check_until(lab, lambda run: run.returncode == 0, "the lab fixed by the answer")

    again = applied(lab, name)  # broken again: lab.up of the original topology repairs it
    assert again.facts == fault.facts  # the same seed, the same objects
    check_until(lab, reported(scenario, again), f"{scenario.reports}")
    invoke("lab.up", "--topology", LABS[lab], "--no-verify")
    assert commands.faults(lab) == []  # the faults are repaired: --answers has nothing left to say
    check_until(lab, lambda run: run.returncode == 0, "the lab repaired by lab.up")
    assert "rogue_dhcp" not in sh("ps -eo args")


def test_the_list_is_one_scenario_a_line_name_first():
    out = invoke("lab.break", "--list").stdout.splitlines()
    assert len(out) >= 10
    for line in out:
        name, summary = line.split(None, 1)
        assert breaking.scenario(name).summary == summary


def test_a_scenario_a_lab_cannot_have_is_refused_in_one_sentence(faults_lab):
    run = invoke("lab.break", "uplink-down-one-switch", "--lab", "faults", expect=1)
    assert run.stderr == ("labkit: scenario uplink-down-one-switch does not apply to lab faults: it needs a pair of "
                          "switches (switch: {pair: true})\n")
    assert commands.faults("faults") == []
