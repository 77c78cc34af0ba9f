"""How long each phase of a command took (lab.up --timings / --json, and bench/)."""

from __future__ import annotations

import contextlib
import time


class Phases:
    def __init__(self):
        self.items: list[tuple[str, float]] = []
        self.started = time.monotonic()

    @contextlib.contextmanager
    def phase(self, name: str):
        start = time.monotonic()
        try:
            yield
        finally:
            self.items.append((name, time.monotonic() - start))

    def total(self) -> float:
        return time.monotonic() - self.started

    def as_list(self) -> list[dict]:
        return [{"phase": name, "seconds": round(seconds, 3)} for name, seconds in self.items]

    def table(self) -> str:
        width = max((len(name) for name, _ in self.items), default=5)
        lines = [f"{name:<{width}}  {seconds:7.3f} s" for name, seconds in self.items]
        return "\n".join(["phases:"] + [f"  {line}" for line in lines] + [f"  {'total':<{width}}  {self.total():7.3f} s"])
