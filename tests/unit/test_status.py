"""lab.status rows from a plan and the VM ports (pure), and the stable JSON form."""

from __future__ import annotations

import json
from dataclasses import replace

from labkit import status
from labkit.pipeline import plan_up

from .hostsim import state_after
from .test_plan import recorded, up_plan


def lab_and_host():
    desired, _ = up_plan(recorded("debian-fresh"))
    return desired, state_after(desired.lab, desired.docs, recorded("debian-fresh"))


def vm_ports_of(lab, tag_of=lambda nic: nic.tag):
    return {nic.interfaceid: (nic.target or "vnet0", tag_of(nic), "") for d in lab.domains for nic in d.nics
            if nic.kind == "ovs"}


def test_a_matching_host_is_healthy_and_json_is_versioned():
    desired, host = lab_and_host()
    report = status.build(desired.lab, plan_up(desired, host), vm_ports_of(desired.lab), ["x: y"])
    assert report.healthy
    data = json.loads(report.to_json())
    assert data["version"] == 1 and data["healthy"] and data["deviations"] == ["x: y"]
    assert set(data["objects"][0]) == {"kind", "name", "node", "wanted", "present", "healthy", "detail"}
    assert data["namespaces"] == {"DRM-3060-G4-1-1": "labkit.seed.DRM-3060-G4-1-1"}


def test_missing_down_and_mistagged_objects_are_named():
    desired, host = lab_and_host()
    host = replace(host, domains=tuple(d for d in host.domains if d.name != "uvm32"),
                   links=tuple(replace(l, up=False) if l.name == "eth2" else l for l in host.links))
    ports = vm_ports_of(desired.lab, tag_of=lambda nic: None if nic.tag is None else 0)
    report = status.build(desired.lab, plan_up(desired, host), ports, [])
    rows = {(r.kind, r.name): r for r in report.rows}
    assert not report.healthy
    assert rows[("domain", "uvm32")].present is False and rows[("domain", "uvm32")].detail == "missing"
    assert rows[("veth", "seed-n1-eth2")].healthy is False and "up" in rows[("veth", "seed-n1-eth2")].detail
    assert rows[("vm-port", "uvm32/eth0")].detail == "tag 0, want 32"


def test_a_bond_member_down_makes_the_bond_unhealthy():
    desired, host = lab_and_host()
    report = status.build(desired.lab, plan_up(desired, host), vm_ports_of(desired.lab), [],
                          {"bond0": ["eth2 link down"], "seed-n1-bond0": []})
    bond = next(r for r in report.rows if r.name == "bond0")
    assert (bond.present, bond.healthy, bond.detail) == (True, False, "eth2 link down") and not report.healthy
    assert "NOT healthy" in report.table()
