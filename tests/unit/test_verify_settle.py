"""lab.verify tells "not settled yet" from "broken": a failed check is tried again while the host
is busy (guests still booting) and twice more once it is settled; it is reported only when it
persists. The guests and the host's CPU are stood in for; what is tested is the decision."""

from __future__ import annotations

import time

import pytest

from labkit import model, pipeline
from labkit.features import verifier
from labkit.verify import Endpoint, Outcome, Probe

from ..conftest import REPO

GOOD = Probe(Endpoint("guest", "a", "a"), "gw", "10.0.0.1", True)
FLAKY = Probe(Endpoint("guest", "b", "b"), "gw", "10.0.0.1", True)


@pytest.fixture
def lab():
    return model.resolve(pipeline.load(str(REPO / "examples/seed.yaml")))


def stand_in(monkeypatch, answers: list[bool], busy: list[float]):
    """FLAKY answers as `answers` says, one per try; the host is as busy as `busy` says."""
    tries, slept, clock = [], [], [1000.0]
    monkeypatch.setattr(verifier, "wait_for_guests", lambda *a, **k: [])
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])  # the host's time passes as the stand-in sleeps

    def run(lab, down=(), only=None):
        tries.append(only)
        ok = answers[min(len(tries) - 1, len(answers) - 1)]
        outcomes = [Outcome(p, ok if p is FLAKY else True) for p in (GOOD, FLAKY) if only is None or p in only[0]]
        return outcomes, []

    def host_busy(seconds):
        slept.append(seconds)
        clock[0] += seconds
        return busy[min(len(slept) - 1, len(busy) - 1)]

    monkeypatch.setattr(verifier, "run", run)
    monkeypatch.setattr(verifier, "host_busy", host_busy)
    return tries, slept


def test_a_check_that_fails_while_guests_boot_passes_once_they_settle(lab, monkeypatch):
    tries, slept = stand_in(monkeypatch, [False, False, False, True], busy=[0.95, 0.9, 0.8])
    result = pipeline.verify_lab(lab, timeout=60, say=lambda _m: None)
    assert result.failed == [] and len(tries) == 4
    assert tries[1] == ({FLAKY}, set())  # only what failed is tried again
    assert slept == [0.5, 1.0, 2.0]  # with backoff


def test_a_check_that_still_fails_on_a_settled_host_is_reported_within_seconds(lab, monkeypatch):
    tries, slept = stand_in(monkeypatch, [False], busy=[0.05])
    said = []
    result = pipeline.verify_lab(lab, timeout=180, say=said.append)
    assert [o.probe for o in result.failed] == [FLAKY] and len(tries) == 1 + pipeline.SETTLED_TRIES
    assert sum(slept) < 2 and any("trying them again" in m for m in said)


def test_a_busy_host_is_waited_for_no_longer_than_the_timeout(lab, monkeypatch):
    tries, slept = stand_in(monkeypatch, [False], busy=[1.0])
    result = pipeline.verify_lab(lab, timeout=10, say=lambda _m: None)
    assert [o.probe for o in result.failed] == [FLAKY] and sum(slept) <= 10
