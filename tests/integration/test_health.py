"""Health means working: lab.status sees a DHCP server killed, stopped or left in a namespace that
was made anew, an OpenFlow rule deleted and a route removed, and lab.up mends each (the guest
then holds its address by DHCP again, checked from inside it). Tests run in file order on one lab."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from labkit import names
from labkit.host import dhcp

from ..conftest import REPO
from .conftest import invoke, lab_up_for_module, sh

LAB = "health"
TOPOLOGY = str(REPO / "tests/topologies/health.yaml")
EFFECTIVE = f"/run/labkit/{LAB}/effective/topology.yaml"
NODE_NS = f"labkit.{LAB}.node1"


@pytest.fixture(scope="module")
def lab():
    yield from lab_up_for_module(LAB, TOPOLOGY)


def status_rows() -> dict[str, str]:
    """The rows lab.status reports unhealthy: 'kind name' -> detail."""
    run = subprocess.run([sys.executable, "-m", "invoke", "lab.status", "--lab", LAB, "--json"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    report = json.loads(run.stdout)
    assert (run.returncode == 0) == report["healthy"]
    return {f"{r['kind']} {r['name']}": r["detail"] for r in report["objects"] if not r["healthy"] or r["present"] != r["wanted"]}


def mended() -> None:
    """lab.up mends what was broken; the guest holds its pool address by DHCP again."""
    invoke("lab.up", "--topology", EFFECTIVE)
    assert status_rows() == {}
    out = invoke("lab.verify", "--lab", LAB).stdout
    assert "DHCP ok   web1 holds 10.50.0.100/24 by DHCP from 10.50.0.254" in out


def dnsmasq_pid() -> int:
    return int(sh(f"pgrep -f -- '--conf-file=/run/labkit/{LAB}/dhc[p]/node1.conf'").split()[0])


def test_the_dhcp_server_runs_unprivileged_with_root_only_files(lab):
    pid = dnsmasq_pid()
    assert sh(f"ps -o user= -p {pid}").strip() == "dnsmasq"
    for name in ("node1.conf", "node1.leases"):
        st = os.stat(f"/run/labkit/{LAB}/dhcp/{name}")
        assert (st.st_uid, st.st_mode & 0o777) == (0, 0o600), name
    assert os.stat(f"/run/labkit/{LAB}/dhcp").st_mode & 0o777 == 0o700
    assert "10.50.0.100" in open(f"/run/labkit/{LAB}/dhcp/node1.leases").read()  # written after giving up root


def test_a_killed_dhcp_server(lab):
    os.kill(dnsmasq_pid(), signal.SIGKILL)
    time.sleep(0.2)
    assert status_rows() == {"dhcp node1": "missing"}
    mended()


def test_a_stopped_dhcp_server(lab):
    pid = dnsmasq_pid()
    os.kill(pid, signal.SIGSTOP)
    assert status_rows() == {"dhcp node1": "update: restart: dnsmasq is stopped (SIGSTOP)"}
    mended()
    assert dnsmasq_pid() != pid


def test_a_deleted_rule(lab):
    mac = sh("virsh -c qemu:///system domiflist web1 | awk '/br0/ {print $5}'").strip()
    sh(f"ovs-ofctl del-flows br0 'cookie={names.flow_cookie(LAB)}/-1,udp,dl_src={mac},tp_src=68,tp_dst=67'")
    rows = status_rows()
    assert list(rows) == ["ovs-flows br0"] and "in ovs-vswitchd" in rows["ovs-flows br0"]
    mended()


def test_a_removed_route(lab):
    sh(f"ip netns exec {NODE_NS} ip route del default")
    assert status_rows() == {f"route {NODE_NS}/default": "missing"}
    mended()


def test_a_namespace_deleted_and_made_anew(lab):
    """The old dnsmasq keeps the old namespace alive: it serves nobody, and is restarted."""
    sh(f"ip netns del {NODE_NS}")
    sh(f"ip netns add {NODE_NS}")
    rows = status_rows()
    assert rows["dhcp node1"] == "update: restart: dnsmasq is not in the node's namespace (it was made anew)"
    mended()


def test_only_the_rules_changed_is_applied_once(lab):
    """A change that alters only the rules (a NIC on the managed network): its digest is recorded
    after the rules, so the next lab.up has nothing to do."""
    invoke("acli", "--lab", LAB, "-c", "vm.nic_create web1 network=web")
    again = invoke("lab.up", "--topology", EFFECTIVE, "--no-verify")
    assert "nothing to do, the host already matches" in again.stderr, again.stderr
    nics = json.loads(invoke("acli", "--lab", LAB, "-o", "json", "-c", "vm.nic_get web1").stdout)["data"]
    invoke("acli", "--lab", LAB, "-y", "-c", f"vm.nic_delete web1 {nics[-1]['mac_address']}")
    assert "nothing to do" in invoke("lab.up", "--topology", EFFECTIVE, "--no-verify").stderr


def test_a_dhcp_server_that_ignores_sigterm_is_killed(tmp_path, monkeypatch):
    """dhcp.stop: SIGTERM, then SIGKILL; the files go once it is gone."""
    monkeypatch.setattr(dhcp, "RUN_DIR", tmp_path)
    monkeypatch.setattr(dhcp, "STOP_SECONDS", 0.5)
    folder = tmp_path / "stubborn" / "dhcp"
    folder.mkdir(parents=True)
    conf = folder / "node1.conf"
    conf.write_text("# a stand-in\n")
    stubborn = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                                 "print('ready', flush=True); time.sleep(60)", f"--conf-file={conf}"], stdout=subprocess.PIPE)
    assert stubborn.stdout.readline() == b"ready\n"
    (folder / "node1.pid").write_text(f"{stubborn.pid}\n")
    started = time.monotonic()
    dhcp.stop("stubborn", "node1")
    assert stubborn.wait(5) == -signal.SIGKILL and time.monotonic() - started < 3
    assert not conf.exists() and not (folder / "node1.pid").exists()


def test_a_configuration_dnsmasq_refuses_leaves_the_running_one_serving(lab, monkeypatch):
    """The new configuration is tested by dnsmasq before the running one is stopped: a refused one
    is one sentence, and the node keeps its DHCP."""
    from labkit import pipeline
    from labkit.errors import HostError

    pid = dnsmasq_pid()
    (server,) = pipeline.resolved(EFFECTIVE).dhcp_servers
    monkeypatch.setattr(dhcp, "config", lambda _lab, _server: "no-such-option=1\n")
    with pytest.raises(HostError, match="^dnsmasq refuses the configuration for node node1 .*the running one keeps serving$"):
        dhcp.start(LAB, server)
    assert dnsmasq_pid() == pid and status_rows() == {}
