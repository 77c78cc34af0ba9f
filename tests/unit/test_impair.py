"""lab.impair's values: written as tc writes them, checked before the kernel sees them, said back
the same way, and read back from what the kernel reports of a netem qdisc."""

from __future__ import annotations

import pytest

from labkit import impair
from labkit.errors import LabkitError
from labkit.impair import Impairment


def test_values_as_tc_writes_them():
    got = impair.parse(delay="50ms", jitter="10ms", loss="2%", rate="100mbit", duplicate="1", corrupt="0.1%")
    assert got == Impairment(50_000, 10_000, 2.0, 1.0, 0.1, 100_000_000)
    assert str(got) == "delay 50ms jitter 10ms loss 2% duplicate 1% corrupt 0.1% rate 100mbit"
    assert got.netem() == {"delay": 50_000, "jitter": 10_000, "loss": 2.0, "duplicate": 1.0, "prob_corrupt": 0.1,
                           "rate": "100000000bit"}
    assert str(impair.parse(delay="250us")) == "delay 250us"
    assert str(impair.parse(rate="512kbit")) == "rate 512kbit"


@pytest.mark.parametrize("kw, message", [
    ({}, "say how the link is bad"),
    ({"delay": "50"}, "--delay '50' is not a time"),
    ({"delay": "2m"}, "is not a time"),
    ({"delay": "90s"}, "more than a minute"),
    ({"jitter": "5ms"}, "--jitter varies a delay"),
    ({"delay": "5ms", "jitter": "10ms"}, "a delay cannot go below zero"),
    ({"loss": "120%"}, "--loss '120%' is not a percentage"),
    ({"loss": "-1%"}, "is not a percentage"),
    ({"rate": "fast"}, "--rate 'fast' is not a rate"),
    ({"rate": "1bit"}, "outside 8kbit-34gbit"),
    ({"delay": "50ms\n"}, None),
])
def test_mistakes_are_one_line(kw, message):
    if message is None:  # surrounding whitespace is not a mistake
        assert impair.parse(**kw).delay_us == 50_000
        return
    with pytest.raises(LabkitError) as err:
        impair.parse(**kw)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_what_the_kernel_reports_reads_back():
    u32 = lambda pct: int((2**32 - 1) * pct / 100)  # noqa: E731 - the kernel's scale
    opts = {"delay": 50_000 * 15.625, "jitter": 0, "loss": u32(2), "duplicate": 0, "corrupt": u32(0.1), "rate": 12_500_000}
    assert impair.from_qdisc("netem", opts, 15.625) == Impairment(50_000, 0, 2.0, 0.0, 0.1, 100_000_000)
    assert impair.from_qdisc("tbf", {"rate": 12_500}, 15.625) == Impairment(rate_bps=100_000)


def test_a_rate_alone_is_tbf_s_and_anything_else_netem_s():
    kind, params = impair.parse(rate="100kbit").qdisc()
    assert (kind, params) == ("tbf", {"rate": "100000bit", "burst": 10240, "latency": 50_000})
    assert impair.parse(rate="10gbit").qdisc()[1]["burst"] == 12_500_000
    assert impair.parse(rate="1mbit", loss="1%").qdisc()[0] == "netem"


def test_a_topology_s_impairments_are_planned_cleared_when_made_by_hand_and_degraded_without_netem():
    from dataclasses import replace

    from labkit import model, pipeline, render
    from labkit.model import HostFacts

    from ..conftest import REPO
    from .hostsim import state_after

    text = (REPO / "examples/lacp.yaml").read_text() + (
        "impair:\n  node1/br0-up: {rate: 100mbit}\n  node1/eth2: {delay: 50ms, loss: 1%, side: tor}\n")
    topo = topology_of(text)
    lab = model.resolve(topo)
    impaired = {end: str(imp) for v in lab.veths for end, imp in v.impaired}
    uplinks = lab.uplinks("node1")
    assert impaired == {uplinks["eth2"].peer: "rate 100mbit", uplinks["eth3"].peer: "rate 100mbit",
                        uplinks["eth2"].name: "delay 50ms loss 1%"}
    adapt = render.Adaptation(domain_type="qemu", cpu_passthrough=False, locked_memory=False, passthrough=False)
    desired = pipeline.rendered(lab, adapt)
    fresh = pipeline.plan_up(desired, state_after(lab, desired.docs).__class__())
    assert sorted(a.name for a in fresh.actions if a.kind == "impair") == sorted(impaired)
    host = state_after(lab, desired.docs)
    assert [a for a in pipeline.plan_up(desired, host).actions if a.kind == "impair"] == []
    # eth3's node end impaired by hand as well: drift, which lab.up clears
    by_hand = replace(host, links=tuple(replace(link, impairment="delay 5ms") if link.name == uplinks["eth3"].name
                                        else link for link in host.links))
    (action,) = [a for a in pipeline.plan_up(desired, by_hand).actions if a.kind == "impair"]
    assert (action.name, action.obj, action.detail) == (uplinks["eth3"].name, None, "clear delay 5ms (made by hand: lab.impair)")
    # a kernel without netem: the rate stays, the delay and loss are a deviation
    degraded = model.resolve(topo, HostFacts(netem=False))
    assert {end: str(imp) for v in degraded.veths for end, imp in v.impaired} == {
        uplinks["eth2"].peer: "rate 100mbit", uplinks["eth3"].peer: "rate 100mbit"}
    assert any("needs netem, which this kernel lacks" in str(d) for d in degraded.deviations)


def topology_of(text: str):
    from labkit import topology

    return topology.load_bytes(text.encode(), "lacp-impaired.yaml")
