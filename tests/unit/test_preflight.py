"""How preflight's checks bend the lab (pure: the checks themselves run on the host)."""

from __future__ import annotations

import pytest

from labkit.errors import HostError
from labkit.host.preflight import DEGRADED, FAIL, PASS, Check, Report, enforce


def report(**status) -> Report:
    names = ["services", "kvm", "memlock", "vfio", "ovs datapath"]
    return Report(tuple(Check(n, status.get(n.replace(" ", "_"), PASS), f"{n} detail", f"{n} advice") for n in names))


def test_a_capable_host_bends_nothing():
    adapt = report().adaptation()
    assert (adapt.domain_type, adapt.cpu_passthrough, adapt.locked_memory, adapt.passthrough) == ("kvm", True, True, True)
    assert report().datapath_type() == "system"


def test_each_missing_feature_drops_its_stanza():
    adapt = report(kvm=DEGRADED, memlock=DEGRADED, vfio=DEGRADED, ovs_datapath=DEGRADED).adaptation()
    assert (adapt.domain_type, adapt.cpu_passthrough, adapt.locked_memory, adapt.passthrough) == ("qemu", False, False, False)
    assert report(ovs_datapath=DEGRADED).datapath_type() == "netdev"


def test_degraded_passes_unless_strict_and_failed_always_stops():
    enforce(report(kvm=DEGRADED), strict=False)
    with pytest.raises(HostError, match=r"preflight \(--strict\) stops the lab: kvm: kvm detail \(kvm advice\)"):
        enforce(report(kvm=DEGRADED), strict=True)
    with pytest.raises(HostError, match="services: services detail"):
        enforce(report(services=FAIL), strict=False)


def test_table_gives_advice_only_where_it_is_needed():
    table = report(memlock=DEGRADED).table()
    assert "-> memlock advice" in table and "-> kvm advice" not in table
