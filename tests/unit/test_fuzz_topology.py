"""Fuzzing the loader (issue 12, item 7): random YAML and mutations of every example end in a plan
or in exit 2 with file:line problems, never in an internal error, each within 1 s."""

from __future__ import annotations

import resource
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labkit import pipeline, render, topology
from labkit.errors import TopologyError
from labkit.hoststate import HostState

from ..conftest import REPO

EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
TEXTS = [p.read_text() for p in EXAMPLES]
# What a person (or a bad editor) puts into a YAML file.
WORDS = ["", "0", "-1", "4095", "99999", "1.5", "true", "null", "~", "[]", "{}", "[0, 32]", "{a: 1}", "eth2", "br0",
         "bond0", "node1", "10.59.30.1/23", "10.32.0.999/24", "256MiB", "0MiB", "active-backup", "balance-tcp",
         "'x\\n'", '"\\u0000"', "&a", "*a", "<<: {}", "!!python/object:os.system", "- ", ": ", "#", "|", ">", "\t"]
FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def outcome(text: str) -> str:
    """Parse, and for a valid file resolve, render and plan it: 'plan' or 'problems'."""
    start = time.monotonic()
    try:
        topo = topology.parse(text, "fuzz.yaml")
    except TopologyError as exc:
        assert exc.exit_code == 2 and exc.problems
        for problem in exc.problems:
            assert problem.file == "fuzz.yaml" and problem.line >= 1 and problem.message, problem
        result = "problems"
    else:
        host = HostState()
        pipeline.plan_up(pipeline.desire(topo, host, render.Adaptation()), host)
        result = "plan"
    assert time.monotonic() - start < 1.0, f"took {time.monotonic() - start:.2f} s"
    return result


@st.composite
def mutated(draw):
    lines = draw(st.sampled_from(TEXTS)).splitlines()
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        kind = draw(st.sampled_from(["delete", "duplicate", "swap", "value", "key", "indent", "cut"]))
        line = lines[i]
        if kind == "delete":
            del lines[i]
        elif kind == "duplicate":
            lines.insert(i, line)
        elif kind == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif kind == "value" and ":" in line:
            lines[i] = line.rsplit(":", 1)[0] + ": " + draw(st.sampled_from(WORDS))
        elif kind == "key" and ":" in line:
            lines[i] = line.split(":", 1)[0][: -draw(st.integers(1, 3))] + ":" + line.split(":", 1)[1]
        elif kind == "indent":
            lines[i] = " " * draw(st.integers(0, 6)) + line.lstrip()
        elif kind == "cut":
            lines[i] = line[: draw(st.integers(0, len(line)))]
        if not lines:
            lines = [""]
    return "\n".join(lines) + "\n"


yaml_text = st.lists(st.sampled_from(list("abcnod0129 :-[]{},.&*!|>#'\"\n\t/") + WORDS + ["name", "nodes", "\n  "]),
                     max_size=80).map("".join)


@FUZZ
@given(mutated())
def test_mutated_examples_plan_or_fail_with_file_line(text):
    outcome(text)


@FUZZ
@given(yaml_text)
def test_random_yaml_plans_or_fails_with_file_line(text):
    outcome(text)


def test_every_example_still_plans_and_memory_stays_bounded():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert [outcome(text) for text in TEXTS] == ["plan"] * len(TEXTS)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 * 1024  # KiB
