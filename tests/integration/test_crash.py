"""A lab.up or lab.down killed at any point: the next lab.up converges, the next lab.down removes all."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from ..conftest import REPO
from .conftest import invoke, labkit_leftovers

TOPOLOGY = str(REPO / "examples/lacp.yaml")


def killed(args: list[str], delay: float) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "invoke", *args], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.parametrize("delay", [0.5, 0.7, 0.9, 1.2])
def test_killed_up_is_repaired_by_up_and_cleaned_by_down(delay):
    invoke("lab.down", "--lab", "lacp")
    killed(["lab.up", "--no-verify", "--topology", TOPOLOGY], delay)
    invoke("lab.up", "--no-verify", "--topology", TOPOLOGY)
    assert "nothing to do" in invoke("lab.up", "--no-verify", "--topology", TOPOLOGY).stderr
    killed(["lab.down", "--lab", "lacp"], delay - 0.3)
    invoke("lab.down", "--lab", "lacp")
    assert labkit_leftovers("lacp") == []
