"""The OVSDB adapter against a private ovsdb-server and a dummy ovs-vswitchd in a temp dir
(ovsdbapp's way): bridges, bonds and ports written in one transaction read back as the model."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pytest

from labkit import model, pipeline
from labkit.errors import HostError
from labkit.host.ovs import Ovs

SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
pytestmark = pytest.mark.skipif(not shutil.which("ovsdb-server") and not shutil.which("/usr/sbin/ovsdb-server"),
                                reason="Open vSwitch is not installed (invoke host.bootstrap installs it)")


@pytest.fixture(scope="module")
def private_server():
    tmp_path = Path(tempfile.mkdtemp(prefix="lkovs-"))  # short: a unix socket path has at most 107 bytes
    db, sock = tmp_path / "conf.db", tmp_path / "db.sock"
    # Its own run directory: a bridge's OpenFlow socket is <rundir>/<bridge>.mgmt, and the host's OVS
    # may have a bridge of the same name (a lab's br0) whose socket this one must not replace or remove.
    env = dict(os.environ, OVS_RUNDIR=str(tmp_path), OVS_LOGDIR=str(tmp_path), OVS_DBDIR=str(tmp_path))
    subprocess.run(["ovsdb-tool", "create", str(db), SCHEMA], check=True)
    procs = [subprocess.Popen(["/usr/sbin/ovsdb-server", str(db), f"--remote=punix:{sock}", "--no-chdir",
                               f"--unixctl={tmp_path / 'db.ctl'}", "-vconsole:off"], env=env)]
    deadline = time.monotonic() + 10
    while not sock.exists():
        assert time.monotonic() < deadline, "private ovsdb-server did not start"
        time.sleep(0.05)
    subprocess.run(["ovs-vsctl", f"--db=unix:{sock}", "--no-wait", "init"], check=True)
    procs.append(subprocess.Popen(["/usr/sbin/ovs-vswitchd", f"unix:{sock}", "--enable-dummy=override", "--no-chdir",
                                   f"--unixctl={tmp_path / 'vswitchd.ctl'}", "-vconsole:off"], env=env))
    try:  # one connection for the module: ovsdbapp keeps per-process state across connections
        with Ovs(remote=f"unix:{sock}", timeout=10) as ovs:
            yield ovs
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(5)
        shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.fixture
def private_ovs(private_server):
    """The private OVS, emptied of bridges before each test."""
    for bridge in subprocess.run(["ovs-vsctl", f"--db={private_server.remote}", "list-br"], check=True,
                                 capture_output=True, text=True).stdout.split():
        subprocess.run(["ovs-vsctl", f"--db={private_server.remote}", "del-br", bridge], check=True)
    return private_server


def seed_bridges():
    lab = model.resolve(pipeline.load(None), model.HostFacts(datapath_type="netdev"))
    return lab, [b for b in lab.bridges]


def test_converge_writes_what_observe_reads_back(private_ovs):
    lab, bridges = seed_bridges()
    private_ovs.converge(bridges, lab.name)
    seen = {b.name: b for b in private_ovs.observe()}
    for bridge in bridges:
        assert seen[bridge.name].lab == "seed" and seen[bridge.name].datapath_type == "netdev"
        assert seen[bridge.name].ports == tuple(sorted(bridge.ports, key=lambda p: p.name))
        assert seen[bridge.name].other_ports == (bridge.name,)  # the bridge's own internal port


def test_converge_changes_and_removes_ports_and_leaves_others_alone(private_ovs):
    lab, bridges = seed_bridges()
    private_ovs.converge(bridges, lab.name)
    subprocess.run(["ovs-vsctl", f"--db={private_ovs.remote}", "add-port", "br0", "vnet0"], check=True)
    tor = next(b for b in bridges if b.role == "tor")
    changed = replace(tor, ports=tuple(replace(p, tag=40) if p.tag == 32 else p for p in tor.ports if p.name != "seed-gw0"))
    private_ovs.converge([changed], lab.name)
    seen = {b.name: b for b in private_ovs.observe()}
    assert seen[tor.name].ports == tuple(sorted(changed.ports, key=lambda p: p.name))
    assert "vnet0" in seen["br0"].other_ports  # a port libvirt made is not labkit's to remove


def test_a_foreign_bridge_is_refused_whole(private_ovs):
    lab, bridges = seed_bridges()
    subprocess.run(["ovs-vsctl", f"--db={private_ovs.remote}", "add-br", "br0"], check=True)
    with pytest.raises(HostError, match="is not lab seed's"):
        private_ovs.converge(bridges, lab.name)
    assert {b.name for b in private_ovs.observe()} == {"br0"}  # one transaction: the ToR was not made either

