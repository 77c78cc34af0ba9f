"""lab.impair and lab.flap on a real lab, checked from inside a guest: pings through a bond limited
to 100 kbit/s queue, and are back to normal when cleared; where the kernel has netem, a delay and
a loss are seen (where it has not, the refusal is one line and nothing is applied); `list` names
the impaired links; a flapped link is left up."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from ..conftest import REPO
from .conftest import invoke, lab_up_for_module, sh

LAB = "cap"
TOPOLOGY = str(REPO / "tests/topologies/capture.yaml")
GATEWAY = "10.32.0.1"  # on the switch: vm1's pings cross the bond


@pytest.fixture(scope="module")
def lab():
    yield from lab_up_for_module(LAB, TOPOLOGY)


def ping(count: int, interval: float, size: int = 56) -> tuple[int, int, float]:
    """(sent, received, average RTT in ms) of vm1's pings to its gateway."""
    out = invoke("lab.console", "vm1", "--lab", LAB, "--cmd",
                 f"ping -c {count} -i {interval} -s {size} -W 2 {GATEWAY}; true").stdout
    sent, received = map(int, re.search(r"(\d+) packets transmitted, (\d+) packets received", out).groups())
    rtt = re.search(r"min/avg/max = [\d.]+/([\d.]+)/", out)
    return sent, received, float(rtt.group(1)) if rtt else 0.0


def netem(*args: str) -> bool:
    """lab.impair with netem's values: True when applied; False, after checking the refusal, on a
    kernel without netem (this workplace's has none: CONFIG_NET_SCH_NETEM is not set)."""
    run = subprocess.run([sys.executable, "-m", "invoke", "lab.impair", *args, "--lab", LAB], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    if run.returncode == 0:
        return True
    assert run.returncode == 4 and "this kernel has no netem" in run.stderr and run.stderr.count("\n") == 1, run.stderr
    assert "no link is impaired" in invoke("lab.impair", "list", "--lab", LAB).stdout  # nothing half-applied
    return False


def test_a_rate_limit_is_seen_in_the_guest_s_ping_and_cleared(lab, tmp_path):
    invoke("lab.verify", "--lab", LAB)
    _, _, before = ping(20, 0.05, size=1372)
    invoke("lab.impair", "node1/br0-up", "--rate", "100kbit", "--lab", LAB)
    listed = invoke("lab.impair", "list", "--lab", LAB).stdout
    assert re.search(r"^node1/eth2\s+\S+\s+rate 100kbit$", listed, re.M), listed
    assert re.search(r"^node1/eth3\s+\S+\s+rate 100kbit$", listed, re.M), listed
    status = subprocess.run([sys.executable, "-m", "invoke", "lab.status", "--lab", LAB], cwd=REPO,
                            capture_output=True, text=True, timeout=120).stdout
    assert re.search(r"^\s+impair\s+\S+\s+no\s+yes\s+no\s+clear rate 100kbit \(made by hand: lab.impair\); "
                     r"lab.up clears it$", status, re.M), status  # drift from the topology
    invoke("lab.diagram", "--format", "dot", "--out", str(tmp_path / "cap.dot"), "--lab", LAB)
    assert "rate 100kbit" in (tmp_path / "cap.dot").read_text()  # drawn orange, with what it is
    # 1414-byte frames every 50 ms offer 226 kbit/s to 100 kbit/s: they queue (up to tbf's 50 ms)
    _, _, during = ping(20, 0.05, size=1372)
    assert during - before >= 30, (before, during)
    invoke("lab.impair", "node1/br0-up", "--clear", "--lab", LAB)
    assert "no link is impaired" in invoke("lab.impair", "list", "--lab", LAB).stdout
    _, _, after = ping(20, 0.05, size=1372)
    assert after < before + 20, (before, after)


def test_a_delay_and_loss_where_the_kernel_has_netem(lab):
    _, _, before = ping(5, 0.2)
    if not netem("node1/br0-up", "--delay", "100ms"):
        return  # the refusal is checked: one line, nothing applied
    try:
        _, received, during = ping(5, 0.2)
        assert received == 5 and 95 <= during - before <= 160, (before, during)  # one way: the request
        invoke("lab.impair", "node1/br0-up", "--loss", "50%", "--lab", LAB)
        sent, received, _ = ping(60, 0.05)
        assert 0.25 <= (sent - received) / sent <= 0.75, (sent, received)  # p=0.5, 60 probes: +-3.9 sd
    finally:
        invoke("lab.impair", "node1/br0-up", "--clear", "--lab", LAB)


def test_a_flapped_link_is_left_up(lab):
    out = invoke("lab.flap", "node1/eth2", "--period", "1s", "--count", "2", "--lab", LAB).stderr
    assert out.count("node1/eth2 down") == 2 and out.count("node1/eth2 up") == 2, out
    assert "state UP" in sh("ip link show eth2") or "LOWER_UP" in sh("ip link show eth2")
    invoke("lab.verify", "--lab", LAB)


def test_mistakes_are_one_line(lab):
    run = invoke("lab.impair", "node1/eth9", "--delay", "5ms", "--lab", LAB, expect=1)
    assert "node node1 has no interface 'eth9'" in run.stderr and run.stderr.count("\n") == 1
    run = invoke("lab.impair", "node1/eth2", "--delay", "lots", "--lab", LAB, expect=1)
    assert "is not a time" in run.stderr


def test_a_topology_declares_impairments_and_lab_up_converges_to_it(lab, tmp_path):
    impaired = tmp_path / "cap-impaired.yaml"
    impaired.write_text(open(TOPOLOGY).read() + "impair:\n  node1/br0-up: {rate: 100kbit}\n")
    up = invoke("lab.up", "--topology", str(impaired)).stderr
    assert "update impair" in up, up
    listed = invoke("lab.impair", "list", "--lab", LAB).stdout
    assert re.search(r"^node1/eth2\s+\S+\s+rate 100kbit$", listed, re.M), listed
    status = invoke("lab.status", "--lab", LAB).stdout  # healthy: the lab is as its topology says
    assert re.search(r"^\s+impair\s+\S+\s+yes\s+yes\s+yes\s+rate 100kbit$", status, re.M), status
    _, _, during = ping(20, 0.05, size=1372)
    assert during >= 30, during
    invoke("lab.up", "--topology", TOPOLOGY)  # the original: no impairment
    assert "no link is impaired" in invoke("lab.impair", "list", "--lab", LAB).stdout
