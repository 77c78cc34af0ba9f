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
