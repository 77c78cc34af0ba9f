"""lab.break's catalogue against resolved labs (pure): what each scenario plans on a host that
runs the lab, its answer and fix, where it does not apply, and what lab.check then finds."""

from __future__ import annotations

from dataclasses import replace

import pytest

from labkit import breaking, checking, pipeline, plan
from labkit.errors import LabkitError

from ..conftest import REPO
from .hostsim import state_after
from .test_plan import recorded, up_plan

GOLDEN = REPO / "tests/golden/breaks"
TOPOLOGIES = ("tests/topologies/faults.yaml", "tests/topologies/faultpair.yaml")


class Verified:
    """lab.verify's result when every probe passed (the network checks are the integration tests')."""
    failed = dhcp_failed = outcomes = dhcp = []


def running(topology: str):
    desired, _ = up_plan(recorded("debian-fresh"), topology)
    return desired, state_after(desired.lab, desired.docs, recorded("debian-fresh"))


def fault_plan(desired, host, after) -> plan.Plan:
    planned = plan.plan(after, host, desired.docs, pipeline.dhcp_digests(after), pipeline.relay_version())
    return planned.without(pipeline.plan_up(desired, host))


def test_the_catalogue_has_the_faults_the_issue_names():
    assert set(breaking.catalogue()) >= {
        "vm-wrong-vlan", "cvm-port-tagged", "bond-member-missing", "lacp-one-side", "slb-vlan-missing", "mtu-mismatch",
        "rogue-dhcp", "duplicate-ip", "host-default-route", "uplink-down-one-switch"}


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_each_scenario_on_a_running_lab(topology, golden):
    """Golden: the changes each scenario makes (nothing else), its answer and fix, and lab.check's
    findings on the host it leaves (simulated); a scenario that does not apply says why in one sentence."""
    desired, host = running(topology)
    out = []
    for name, scenario in breaking.catalogue().items():
        try:
            after, fault = breaking.broken(scenario, desired.lab, host, seed=7)
        except breaking.NotApplicable as exc:
            out.append(f"== {name}: {exc}\n")
            continue
        todo = fault_plan(desired, host, after)
        assert not todo.empty
        broken_host = state_after(after, desired.docs, recorded("debian-fresh"))
        found = checking.findings(desired.lab, pipeline.plan_up(desired, broken_host), {}, Verified())
        out.append(f"== {name} {fault.facts}\n{todo}\n{fault.answer(scenario)}\nfix: {fault.fix(scenario)}\n"
                   f"{checking.table(desired.lab.name, found, 0)}\n")
    golden(GOLDEN / f"{desired.lab.name}.txt", "\n".join(out))


def test_the_seed_makes_the_pick_repeatable_and_varies_it():
    desired, host = running(TOPOLOGIES[0])
    scenario = breaking.scenario("vm-wrong-vlan")
    picks = {breaking.broken(scenario, desired.lab, host, seed)[1].facts["vm"] for seed in range(20)}
    assert breaking.broken(scenario, desired.lab, host, 3)[1] == breaking.broken(scenario, desired.lab, host, 3)[1]
    assert len(picks) > 1


def test_an_unknown_scenario_is_one_sentence():
    with pytest.raises(LabkitError, match=r"^there is no scenario 'nope'; `invoke lab.break --list` lists them$"):
        breaking.scenario("nope")


def test_a_bad_scenario_file_is_named(tmp_path, monkeypatch):
    (tmp_path / "broken.yaml").write_text("summary: x\nchange: melt-the-switch\nreports: [x]\nanswer: x\nfix: [x]\n")
    monkeypatch.setattr(breaking, "CATALOGUE", tmp_path)
    with pytest.raises(LabkitError, match=r"broken.yaml:change: 'melt-the-switch' is not one of "):
        breaking.catalogue()


def test_every_template_names_only_facts_its_change_gives():
    for topology in TOPOLOGIES:
        desired, host = running(topology)
        for scenario in breaking.catalogue().values():
            try:
                _, fault = breaking.broken(scenario, desired.lab, host, seed=1)
            except breaking.NotApplicable:
                continue
            fault.answer(scenario), fault.fix(scenario)
            for pattern in scenario.reports:
                pattern.format_map(fault.facts)


def test_check_leaves_inert_leftovers_to_lab_up_but_not_a_port_on_a_bridge():
    desired, host = running(TOPOLOGIES[0])
    after, fault = breaking.broken(breaking.scenario("rogue-dhcp"), desired.lab, host, seed=7)
    broken_host = state_after(after, desired.docs, recorded("debian-fresh"))
    unplugged = replace(broken_host, bridges=tuple(
        replace(b, ports=tuple(p for p in b.ports if p.name != fault.facts["port"])) for b in broken_host.bridges))
    assert checking.findings(desired.lab, pipeline.plan_up(desired, broken_host), {}, Verified())
    assert checking.findings(desired.lab, pipeline.plan_up(desired, unplugged), {}, Verified()) == []


def test_the_rogue_s_offer_is_a_well_formed_broadcast_dhcpoffer():
    import socket
    import struct

    from labkit import rogue_dhcp

    frame = rogue_dhcp.offer(b"\x02\x00\x00\x00\x00\x01", "10.50.0.252", "10.50.0.251", "255.255.255.0", "10.50.0.252", 7)
    assert frame[:6] == b"\xff" * 6 and frame[12:14] == b"\x08\x00"
    ip = frame[14:34]
    assert rogue_dhcp._checksum(ip) == 0  # the header's checksum holds
    assert socket.inet_ntoa(ip[12:16]) == "10.50.0.252" and ip[16:20] == b"\xff" * 4
    sport, dport, length, _ = struct.unpack("!HHHH", frame[34:42])
    assert (sport, dport, length) == (67, 68, len(frame) - 34)
    bootp = frame[42:]
    assert bootp[0] == 2 and socket.inet_ntoa(bootp[16:20]) == "10.50.0.251"
    options = bootp[236:]
    assert options.startswith(b"\x63\x82\x53\x63\x35\x01\x02")  # the magic cookie, then DHCPOFFER
    assert b"\x36\x04" + socket.inet_aton("10.50.0.252") in options  # its server identifier
