"""lab.capture on a real lab: an LACP PDU on a bond member, a DHCP exchange on a managed network
(the guest asks again, the node's server answers), ARP tagged with its VLAN on the bond; pcap to
a file and to stdout, read back by tcpdump; nothing left after Ctrl-C or kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from ..conftest import REPO
from .conftest import invoke, lab_up_for_module, sh

LAB = "cap"
TOPOLOGY = str(REPO / "tests/topologies/capture.yaml")


@pytest.fixture(scope="module")
def lab():
    yield from lab_up_for_module(LAB, TOPOLOGY)


def capture(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "invoke", "lab.capture", *args, "--lab", LAB], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finished(proc: subprocess.Popen, timeout: float = 60) -> tuple[str, str]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"lab.capture exited {proc.returncode}:\n{out!r}\n{err.decode(errors='replace')}"
    return out.decode(errors="replace"), err.decode(errors="replace")


def listening(proc: subprocess.Popen, timeout: float = 30) -> None:
    """Wait until tcpdump says it listens (on stderr), keeping what it said."""
    deadline, seen = time.monotonic() + timeout, b""
    os.set_blocking(proc.stderr.fileno(), False)
    while b"listening on" not in seen:
        assert time.monotonic() < deadline and proc.poll() is None, seen.decode(errors="replace")
        seen += proc.stderr.read() or b""
        time.sleep(0.05)
    os.set_blocking(proc.stderr.fileno(), True)


def tcpdumps() -> list[str]:
    return sh("pgrep -f '^tcpdump -i' || true").split()


def test_an_lacp_pdu_on_a_bond_member_to_a_pcap_file(lab, tmp_path):
    pcap = tmp_path / "lacp.pcap"
    finished(capture("node1/eth2", "--filter", "ether proto 0x8809", "--count", "1", "--seconds", "20", "-w", str(pcap)))
    decoded = sh(f"tcpdump -r {pcap} -n -e -v")
    assert "LACPv1" in decoded and "Actor Information" in decoded, decoded


def test_a_dhcp_exchange_on_a_managed_network(lab):
    invoke("lab.verify", "--lab", LAB)  # web1 holds its lease
    proc = capture("web1", "--filter", "udp and (port 67 or port 68)", "--count", "4", "--seconds", "60")
    listening(proc)
    invoke("lab.console", "web1", "--lab", LAB, "--cmd", "udhcpc -i eth0 -s /bin/labkit-dhcp -n -q -t 3 >/dev/null 2>&1")
    out, _ = finished(proc)
    assert out.count("DHCP") >= 4 or (out.count("BOOTP/DHCP, Request") >= 2 and out.count("BOOTP/DHCP, Reply") >= 2), out
    assert "10.50.0.254.67 > 10.50.0.100.68" in out or "10.50.0.254.67 >" in out, out  # the node's server answers


def test_arp_on_a_vlan_of_the_bond_with_pcap_on_stdout(lab):
    proc = capture("node1/br0-up", "--vlan", "32", "--filter", "arp and host 10.32.0.99", "--count", "1",
                   "--seconds", "30", "-w", "-")
    listening(proc)
    invoke("lab.console", "vm1", "--lab", LAB, "--cmd", "ping -c 2 -W 1 10.32.0.99 >/dev/null 2>&1; true")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert out[:4] in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4"), out[:16]  # a pcap stream
    decoded = subprocess.run(["tcpdump", "-r", "-", "-n", "-e"], input=out, capture_output=True).stdout.decode()
    assert "vlan 32" in decoded and "Request who-has 10.32.0.99 tell 10.32.0.31" in decoded, decoded


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL])
def test_nothing_is_left_after_ctrl_c_or_kill_9(lab, how):
    before = tcpdumps()
    proc = capture("node1/eth3")
    listening(proc)
    assert len(tcpdumps()) == len(before) + 1
    proc.send_signal(how)
    proc.wait(timeout=30)
    if how == signal.SIGINT:
        assert proc.returncode == 0  # Ctrl-C is how a capture ends
    deadline = time.monotonic() + 10
    while tcpdumps() != before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert tcpdumps() == before


def test_mistakes_are_one_line_before_anything_listens(lab):
    for args, message in ((("node1/eth9",), "node node1 has no interface 'eth9' to capture on"),
                          (("vm1", "--vlan", "32"), "vm1 is an access port"),
                          (("node1/eth2", "--filter", "port banana"), "is not a filter tcpdump accepts")):
        run = invoke("lab.capture", *args, "--lab", LAB, expect=1)
        assert message in run.stderr and run.stderr.count("\n") == 1, run.stderr
