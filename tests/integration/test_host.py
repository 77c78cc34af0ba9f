"""host.bootstrap and host.preflight on this machine, and --strict."""

from __future__ import annotations

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
