"""lab.impair (pure): a link made bad rather than dead, as tc netem does it.

An impairment acts on the frames an interface sends (its egress), as `tc qdisc add dev X root
netem ...` does: on `node1/eth2` what the node sends to the switch, on `tor/PORT` what the switch
sends to the node. So a ping across `node1/eth2 --delay 50ms` takes 50 ms longer, and
`--loss 2%` loses about 2 % of the frames one way. Values are written as tc writes them (50ms,
10ms, 2%, 100mbit) and checked here before the kernel sees them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import LabkitError

MAX_DELAY_US = 60_000_000  # a minute
_TIME = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s)")
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)%?")
_RATE = re.compile(r"(\d+(?:\.\d+)?)(bit|kbit|mbit|gbit)")
_TIME_UNITS = {"us": 1, "ms": 1_000, "s": 1_000_000}
_RATE_UNITS = {"bit": 1, "kbit": 1_000, "mbit": 1_000_000, "gbit": 1_000_000_000}


@dataclass(frozen=True)
class Impairment:
    delay_us: int = 0
    jitter_us: int = 0
    loss: float = 0.0  # percent
    duplicate: float = 0.0
    corrupt: float = 0.0
    rate_bps: int = 0  # bits per second; 0: no limit

    @property
    def empty(self) -> bool:
        return self == Impairment()

    @property
    def needs_netem(self) -> bool:
        """Anything but a rate limit alone is netem's (a rate alone is tbf's, which more kernels have)."""
        return self.replace_rate(0) != Impairment()

    def replace_rate(self, bps: int) -> "Impairment":
        return Impairment(self.delay_us, self.jitter_us, self.loss, self.duplicate, self.corrupt, bps)

    def qdisc(self) -> tuple[str, dict]:
        """The root qdisc that makes it, and pyroute2's parameters for it."""
        if not self.needs_netem:
            burst = max(self.rate_bps // 8 // 100, 10240)  # 10 ms of the rate, and a jumbo frame at least
            return "tbf", {"rate": f"{self.rate_bps}bit", "burst": burst, "latency": 50_000}
        return "netem", self.netem()

    def netem(self) -> dict:
        """pyroute2's netem parameters (delay and jitter in microseconds, percents, rate in bits)."""
        kw = {"delay": self.delay_us, "jitter": self.jitter_us, "loss": self.loss, "duplicate": self.duplicate}
        if self.corrupt:
            kw["prob_corrupt"] = self.corrupt
        if self.rate_bps:
            kw["rate"] = f"{self.rate_bps}bit"
        return kw

    def __str__(self) -> str:
        parts = []
        if self.delay_us:
            parts.append(f"delay {_time_text(self.delay_us)}")
        if self.jitter_us:
            parts.append(f"jitter {_time_text(self.jitter_us)}")
        for name in ("loss", "duplicate", "corrupt"):
            if getattr(self, name):
                parts.append(f"{name} {getattr(self, name):g}%")
        if self.rate_bps:
            parts.append(f"rate {_rate_text(self.rate_bps)}")
        return " ".join(parts) or "none"


def parse(delay=None, jitter=None, loss=None, rate=None, duplicate=None, corrupt=None) -> Impairment:
    """An impairment from the values a user wrote (None: not given)."""
    out = Impairment(delay_us=_time("--delay", delay), jitter_us=_time("--jitter", jitter),
                     loss=_percent("--loss", loss), duplicate=_percent("--duplicate", duplicate),
                     corrupt=_percent("--corrupt", corrupt), rate_bps=_rate("--rate", rate))
    if out.jitter_us and not out.delay_us:
        raise LabkitError("--jitter varies a delay: give --delay too (e.g. --delay 50ms --jitter 10ms)")
    if out.jitter_us > out.delay_us:
        raise LabkitError(f"--jitter {_time_text(out.jitter_us)} is more than --delay {_time_text(out.delay_us)}; "
                          f"a delay cannot go below zero")
    if out.empty:
        raise LabkitError("say how the link is bad: --delay, --jitter, --loss, --rate, --duplicate or --corrupt "
                          "(or --clear to make it good again)")
    return out


def from_qdisc(kind: str, opts: dict, tick_per_us: float) -> Impairment:
    """What the kernel reports of a root netem or tbf qdisc (its options), as an Impairment."""
    if kind == "tbf":
        return Impairment(rate_bps=opts.get("rate", 0) * 8)
    pct = lambda v: round(v * 100 / (2**32 - 1), 3)  # noqa: E731 - the kernel's u32 scale of a percent
    return Impairment(delay_us=round(opts.get("delay", 0) / tick_per_us), jitter_us=round(opts.get("jitter", 0) / tick_per_us),
                      loss=pct(opts.get("loss", 0)), duplicate=pct(opts.get("duplicate", 0)),
                      corrupt=pct(opts.get("corrupt", 0)), rate_bps=opts.get("rate", 0) * 8)


def _time(name: str, text) -> int:
    if text is None:
        return 0
    found = _TIME.fullmatch(str(text).strip())
    if not found:
        raise LabkitError(f"{name} {text!r} is not a time; write it as tc does: 50ms, 200us or 1s")
    value = round(float(found.group(1)) * _TIME_UNITS[found.group(2)])
    if value > MAX_DELAY_US:
        raise LabkitError(f"{name} {text} is more than a minute; give at most 60s")
    return value


def _percent(name: str, text) -> float:
    if text is None:
        return 0.0
    found = _PERCENT.fullmatch(str(text).strip())
    if not found or not 0 <= float(found.group(1)) <= 100:
        raise LabkitError(f"{name} {text!r} is not a percentage; write it as tc does: 2% or 0.1%")
    return float(found.group(1))


def _rate(name: str, text) -> int:
    if text is None:
        return 0
    found = _RATE.fullmatch(str(text).strip().lower())
    if not found:
        raise LabkitError(f"{name} {text!r} is not a rate; write it as tc does: 100mbit, 512kbit or 1gbit")
    value = round(float(found.group(1)) * _RATE_UNITS[found.group(2)])
    if not 8_000 <= value <= 34_000_000_000:  # netem's rate is 32 bits of bytes per second
        raise LabkitError(f"{name} {text} is outside 8kbit-34gbit")
    return value


def _time_text(us: int) -> str:
    return f"{us // 1000}ms" if us % 1000 == 0 else f"{us}us"


def _rate_text(bps: int) -> str:
    for unit, size in (("gbit", 10**9), ("mbit", 10**6), ("kbit", 10**3)):
        if bps % size == 0:
            return f"{bps // size}{unit}"
    return f"{bps}bit"
