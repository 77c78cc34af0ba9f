"""lab.save's pure parts: save names, the manifest, when a save is refused (one sentence each),
and lab.up holding the domains lab.restore resumes (defined, never started or stopped)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from labkit import names, pipeline, plan, saves
from labkit.errors import LabkitError

from .hostsim import state_after
from .test_plan import recorded, up_plan

HOST = {"libvirt": "9.0.0", "qemu": "7.2.0", "cpu": "EPYC", "guest_image": "fbba751bdffe4496"}


def manifest(**changes) -> saves.Manifest:
    return saves.Manifest(**({"lab": "seed", "name": "before", "created": "2026-12-03T11:00:00Z", "labkit": "a" * 64,
                              "host": HOST, "domains": {"uvm32": "domains/uvm32.save"}} | changes))


@pytest.mark.parametrize("name", ["before", "day-2.lab_1", "0"])
def test_a_save_name_is_a_plain_directory_name(name):
    assert saves.checked_name(name) == name


@pytest.mark.parametrize("name", ["", "../x", ".hidden", "a/b", "x" * 65, "with space", "new\nline"])
def test_anything_else_is_refused_in_one_sentence(name):
    with pytest.raises(LabkitError, match=r"^.* is not a save name: use 1 to 64 letters, digits, '\.', '_' or '-', "
                                          r"starting with a letter or digit$"):
        saves.checked_name(name)


def test_the_manifest_round_trips_and_a_newer_format_is_refused():
    m = manifest(size=123)
    assert saves.Manifest.from_json(m.to_json()) == m
    with pytest.raises(LabkitError, match="is of another format"):
        saves.Manifest.from_json(m.to_json() | {"version": 2})


def test_a_save_is_restored_only_by_its_labkit_on_its_host():
    assert saves.refusal(manifest(), "a" * 64, HOST) is None
    assert saves.refusal(manifest(), "b" * 64, HOST) == (
        "save before of lab seed was made by another labkit (aaaaaaaaaaaaaaaa; this one is bbbbbbbbbbbbbbbb): a guest's "
        "saved state is only restored by the labkit that saved it; bring the lab up and save it again")
    assert saves.refusal(manifest(), "a" * 64, HOST | {"qemu": "8.0.0", "cpu": "Skylake"}) == (
        "save before of lab seed was made on another host (cpu EPYC then, Skylake now, qemu 7.2.0 then, 8.0.0 now): "
        "QEMU cannot resume its guests; save the lab again")


def test_up_holds_the_domains_restore_resumes():
    """lab.restore: the held domains are defined (made anew if need be) but neither started nor
    stopped; every other change of the plan is kept."""
    fresh = recorded("debian-fresh")
    desired, _ = up_plan(fresh)
    held = frozenset(d.name for d in desired.lab.domains if d.role == "uvm")
    todo, lab = pipeline._holding(pipeline.plan_up(desired, fresh), desired.lab, held)
    assert [a for a in todo.actions if a.kind == "domain" and a.name in held and a.verb != "create"] == []
    assert all(not lab.domain(name).power_on for name in held)
    assert [a for a in todo.actions if a.kind == "domain" and a.verb == "create" and a.name in held]  # defined
    running = state_after(desired.lab, desired.docs, recorded("debian-fresh"))
    stopped = replace(running, domains=tuple(replace(d, active=False) if d.name in held else d for d in running.domains))
    todo, _ = pipeline._holding(pipeline.plan_up(desired, stopped), desired.lab, held)
    assert todo == plan.Plan(desired.lab.name, ())  # the stopped guests wait for their saves


def test_a_namespace_end_has_the_same_mac_each_time_it_is_made():
    mac = names.stable_mac("labkit:seed:gw:32", "eth0")
    assert mac == names.stable_mac("labkit:seed:gw:32", "eth0") != names.stable_mac("labkit:other:gw:32", "eth0")
    first = int(mac.split(":")[0], 16)
    assert first & 0x02 and not first & 0x01  # locally administered, unicast
