"""Five cycles of lab.up + lab.down of the default lab with bench/soak: no failure, nothing left to grow."""

from __future__ import annotations

import subprocess

from ..conftest import REPO


def test_five_up_down_cycles_leave_nothing_behind_and_do_not_slow_down():
    run = subprocess.run([str(REPO / "bench/soak"), "5"], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr[-2000:]}"
    assert "5 cycles of lab.up + lab.down (default lab): PASS" in run.stdout
