"""How preflight's checks bend the lab (pure: the checks themselves run on the host)."""

from __future__ import annotations

import pytest

from labkit.errors import HostError
from labkit.features.preflight import DEGRADED, FAIL, PASS, Check, Report, enforce


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


def test_memory_counts_only_the_guests_lab_up_will_start(monkeypatch):
    """A lab's own running guests are already out of MemAvailable: a second lab.up of a big lab
    must not be refused for them (issue 11, item 6); VMs powered off need nothing."""
    from dataclasses import replace

    from labkit import model, pipeline
    from labkit.features import preflight

    lab = model.resolve(pipeline.load(None))
    monkeypatch.setattr(preflight, "_meminfo_mib", lambda _key: 150)
    assert preflight.check_memory(lab).status == FAIL  # the CVM and uvm32, not running: 2 x about 100 MiB
    running = frozenset(d.name for d in lab.domains)
    assert preflight.check_memory(lab, running).status == PASS
    assert preflight.check_memory(lab, running).detail == "lab needs 0 MiB of 150 MiB available"
    off = replace(lab, domains=tuple(replace(d, power_on=False) for d in lab.domains))
    assert preflight.check_memory(off).status == PASS


def test_memory_counts_what_guests_really_take(monkeypatch):
    """Built-in guests take what they touch (measured: about 108 MiB each at 128 MiB; the balloon
    returns their free pages), so 100 of them need about 10.8 GB, not 100 x (memory + QEMU); a
    guest with its own image, or locked memory, takes all of its memory."""
    from dataclasses import replace

    from labkit import model, pipeline
    from labkit.features import preflight

    lab = model.resolve(pipeline.load(None))
    cvm, uvm = lab.domains
    assert preflight.footprint_mib(uvm, locked=False) == 108 and preflight.footprint_mib(cvm, locked=False) == 110
    assert preflight.footprint_mib(cvm, locked=True) == 256 + preflight.QEMU_OVERHEAD_MIB
    assert preflight.footprint_mib(replace(uvm, image="/x.qcow2"), locked=False) == 128 + preflight.QEMU_OVERHEAD_MIB
    hundred = replace(lab, domains=tuple(replace(uvm, name=f"v{i}") for i in range(100)))
    monkeypatch.setattr(preflight, "_meminfo_mib", lambda _key: 23540)
    check = preflight.check_memory(hundred)
    assert check.status == PASS and check.detail == "lab needs 10800 MiB of 23540 MiB available"


def test_vcpu_oversubscription_counts_every_running_guest_and_stops_above_the_limit(monkeypatch):
    from dataclasses import replace

    from labkit import model, pipeline
    from labkit.features import preflight
    from labkit.hoststate import GuestLoad

    lab = model.resolve(pipeline.load(None))  # 2 vCPUs (lab profile), built-in guests
    monkeypatch.setattr(preflight.os, "cpu_count", lambda: 2)
    check = preflight.check_cpus(lab, GuestLoad(vcpus=30), limit=24)
    assert check.status == PASS and check.detail == \
        "2 vCPUs of this lab + 30 of other running guests on 2 cores: 15.1 per core, a built-in guest's vCPU counted 0.05 (limit 24)"
    check = preflight.check_cpus(lab, GuestLoad(vcpus=30), limit=8)
    assert check.status == FAIL and "lab.up --max-oversubscription" in check.advice
    with pytest.raises(HostError, match=r"^preflight stops the lab: cpus: 2 vCPUs of this lab \+ 30"):
        enforce(Report((check,)), strict=False)
    # 4 nodes x 24 VMs of built-in guests and their CVMs (100 guests) fit two cores: they idle
    uvm = lab.domains[1]
    hundred = replace(lab, domains=tuple(replace(uvm, name=f"v{i}") for i in range(100)))
    assert preflight.check_cpus(hundred, GuestLoad(builtin=4)).status == PASS
    own = replace(hundred, domains=tuple(replace(d, image="/x.qcow2") for d in hundred.domains))
    assert preflight.check_cpus(own).status == FAIL  # 100 vCPUs of real operating systems do not
