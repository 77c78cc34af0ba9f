"""host.bootstrap and host.preflight on this machine, and --strict."""

from __future__ import annotations

import time

import pytest

from ..conftest import REPO
from .conftest import invoke, labkit_leftovers


def test_bootstrap_is_idempotent_and_says_all_is_in_place():
    run = invoke("host.bootstrap")
    assert "services already running" in run.stderr and "is up to date" in run.stderr


def test_preflight_table_and_strict():
    table = invoke("host.preflight").stdout
    for check in ("services", "kvm", "memlock", "vfio", "ovs datapath", "names", "memory", "cpus"):
        assert any(line.startswith(check + " ") for line in table.splitlines()), (check, table)
    if " degraded " in table:  # this machine lacks something (here: KVM, memlock, VFIO, the OVS module)
        assert "preflight (--strict) stops the lab" in invoke("host.preflight", "--strict", expect=4).stderr


def test_strict_up_on_a_degraded_host_creates_nothing():
    if " degraded " not in invoke("host.preflight").stdout:
        pytest.skip("this host has every feature: --strict has nothing to refuse")
    run = invoke("lab.up", "--strict", "--topology", str(REPO / "examples/lacp.yaml"), expect=4)
    assert "preflight (--strict) stops the lab" in run.stderr
    assert labkit_leftovers("lacp") == []


def test_preflight_says_libvirt_keeps_its_qemu_capabilities_cached():
    table = invoke("host.preflight").stdout
    assert any(line.startswith("libvirt cache ") and " pass " in line for line in table.splitlines()), table
    assert any(line.startswith("reaping ") and " pass " in line for line in table.splitlines()), table


def test_a_domain_is_defined_and_started_in_under_three_seconds(tmp_path):
    """The probe storm is gone: with /dev/kvm as udev sets it, libvirt's capabilities cache holds."""
    import libvirt

    from labkit import model, render
    from labkit.features import preflight

    name = "lkstart-probe"
    dom = model.Domain(name, "2b7e1516-28ae-4d2a-a6d2-abf715880900", "uvm", "n", 128, 1, (), hostname=name,
                       serial_log=str(tmp_path / "serial.log"), agent_socket=str(tmp_path / "agent.sock"))
    lab = model.Lab("lkstart", "lab", (), (), (), (), (dom,))
    xml = render.render_domain(dom, lab, preflight.run(lab, probe_kvm=False).adaptation())
    conn = libvirt.open("qemu:///system")
    try:
        started = time.monotonic()
        handle = conn.defineXML(xml)
        handle.create()
        took = time.monotonic() - started
        handle.destroy()
        handle.undefine()
    finally:
        conn.close()
    assert took < 3.0, f"define + start took {took:.1f} s"


def test_every_service_can_be_started_by_what_bootstrap_installed():
    import shutil

    from labkit.features import services

    needed = [p for s in services.SERVICES for p in services._programs(s.start)]
    assert "tini" in needed and "libvirtd" in needed
    assert [p for p in needed if not shutil.which(p)] == []


def test_a_veth_name_another_lab_took_after_the_plan_is_left_alone():
    """Issue 11, item 1: create_veth removed whatever held its names; now only the lab's own
    stale ends (marked, or unmarked from its earlier try) go, and anything else stops lab.up."""
    from labkit import names
    from labkit.errors import HostError
    from labkit.host.netlink import Netlink
    from labkit.model import Veth

    from .conftest import sh

    sh("ip link del lkrace-a", check=False)
    sh("ip link add lkrace-a type veth peer name lkrace-b")
    sh(f"ip link set lkrace-a alias {names.link_alias('otherlab', 'n1', 'uplink')}")
    mine = Veth("lkrace-b", "lkrace-a", None, "uplink", alias=names.link_alias("mylab", "n1", "uplink"))
    try:
        with Netlink() as netlink:
            with pytest.raises(HostError, match=r"^interface lkrace-a was taken by lab otherlab after this lab.up looked"):
                netlink.create_veth(mine)
            assert "otherlab" in sh("ip -d link show lkrace-a")
            sh("ip link set lkrace-a alias ''")  # unmarked: another program's, unless this lab tried before
            with pytest.raises(HostError, match="something that is not labkit's"):
                netlink.create_veth(mine)
            netlink.create_veth(mine, earlier_tries=frozenset({"lkrace-a", "lkrace-b"}))  # its own earlier try
            assert "mylab" in sh("ip -d link show lkrace-a")
    finally:
        sh("ip link del lkrace-a", check=False)


def test_observing_never_creates_a_namespace(monkeypatch):
    """Issue 11, item 3: a lab namespace deleted between listing and entering is simply not there
    (pyroute2's own helpers would create it again, even from lab.status)."""
    import os

    from labkit.host import netlink as netlink_mod

    gone = "labkit.lkgone.node1"
    real = netlink_mod.netns.listnetns
    monkeypatch.setattr(netlink_mod.netns, "listnetns", lambda *a: [*real(*a), gone])
    with netlink_mod.Netlink() as netlink:
        links, namespaces = netlink.observe()
    assert gone not in {ns.name for ns in namespaces}
    assert not os.path.exists(f"/run/netns/{gone}")


def test_two_image_builds_at_once_both_succeed():
    """Issue 11, item 4: two labs building the guest image at once shared staging names and deleted
    each other's directory; each build now stages privately and the later one yields to the earlier."""
    import subprocess
    import sys

    procs = [subprocess.Popen([sys.executable, "-m", "invoke", "images.build", "--force"], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    from labkit import images

    assert not images.needs_build()
    assert not [p for p in images.IMAGES.iterdir() if p.name.startswith(".")]  # no staging left behind
