"""Labs side by side (issue 11): two labs whose files use the same AHV names, brought up at the same
time again and again, never touch each other and both verify; one goes down and the other keeps its
names, its health and an empty plan."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ..conftest import REPO
from .conftest import invoke, labkit_leftovers

ROUNDS = 10


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    text = (REPO / "tests/topologies/twin.yaml").read_text()
    files = {}
    for name in ("twin-a", "twin-b"):
        path = tmp_path_factory.mktemp(name) / f"{name}.yaml"
        path.write_text(text.replace("name: twin-a", f"name: {name}"))
        files[name] = str(path)
    for name in files:
        invoke("lab.down", "--lab", name)
    yield files
    for name in files:
        invoke("lab.down", "--lab", name)
        assert labkit_leftovers(name) == []


def together(*commands: list[str]) -> list[subprocess.CompletedProcess]:
    procs = [subprocess.Popen([sys.executable, "-m", "invoke", *cmd], cwd=REPO, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for cmd in commands]
    return [subprocess.CompletedProcess(p.args, p.wait(timeout=600), *p.communicate()) for p in procs]


def names_of(lab: str) -> set[str]:
    found = json.loads(invoke("lab.list", "--json").stdout)["labs"]
    mine = next(entry for entry in found if entry["name"] == lab)
    return {*mine["bridges"], *mine["networks"], *mine["domains"], *mine["namespaces"]}


def test_two_labs_with_the_same_names_come_up_together_again_and_again(twins):
    for round_ in range(ROUNDS):
        ups = together(*(["lab.up", "--topology", path] for path in twins.values()))
        for run in ups:
            assert run.returncode == 0, f"round {round_}: {' '.join(run.args)}:\n{run.stderr[-2000:]}"
            assert "verified:" in run.stderr
        a, b = names_of("twin-a"), names_of("twin-b")
        assert a and b and not a & b, f"round {round_}: shared names {a & b}"
        if round_ < ROUNDS - 1:
            downs = together(*(["lab.down", "--lab", name] for name in twins))
            assert all(run.returncode == 0 for run in downs), [run.stderr for run in downs]
            assert labkit_leftovers("twin-a") == [] and labkit_leftovers("twin-b") == []


def test_one_goes_down_and_the_other_keeps_its_names_and_health(twins):
    listed = {entry["name"]: entry for entry in json.loads(invoke("lab.list", "--json").stdout)["labs"]}
    assert listed["twin-a"]["state"] == listed["twin-b"]["state"] == "up"
    # the one holding the AHV names goes; the other, on fallback names, must not notice
    holder = next(name for name in twins if "NTNX-node1-CVM" in listed[name]["domains"])
    other = next(name for name in twins if name != holder)
    before = names_of(other)
    invoke("lab.down", "--lab", holder)
    assert labkit_leftovers(holder) == []
    assert names_of(other) == before
    assert "nothing to do" in invoke("lab.up", "--topology", twins[other], "--no-verify").stderr
    assert json.loads(invoke("lab.status", "--lab", other, "--json").stdout)["healthy"]
    invoke("lab.verify", "--lab", other)
