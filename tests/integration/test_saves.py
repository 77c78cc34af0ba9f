"""lab.save and lab.restore on real labs (the default lab and the three-node cluster): a guest's
uptime and a file in its RAM disk written before the save are seen after the restore, whether the
lab ran on and was changed meanwhile (a fault applied, a marker overwritten) or was taken down;
the lab verifies at once; saves are listed with their size and deleted; a save another labkit or
another host made is refused in one sentence, with nothing changed."""

from __future__ import annotations

import json
import re
import time

import pytest

from labkit import saves

from ..conftest import REPO
from .conftest import invoke, lab_up_for_module

LABS = {"seed": (None, "uvm32"), "trio": (str(REPO / "examples/three-nodes.yaml"), "web3")}


@pytest.fixture(scope="module", params=sorted(LABS))
def lab(request):
    name = request.param
    topology, _ = LABS[name]
    up = lab_up_for_module(name, topology or str(REPO / "labkit/default.yaml"))
    next(up)
    yield name
    for folder in saves.directory(name).glob("*"):
        invoke("lab.save", "--delete", folder.name, "--lab", name)
    assert not list(saves.directory(name).glob("*")), "a save was left behind"
    next(up, None)  # down, and nothing of it left


def on(lab: str, command: str) -> str:
    return invoke("lab.console", LABS[lab][1], "--lab", lab, "--cmd", command).stdout


def uptime(lab: str) -> float:
    return float(on(lab, "cat /proc/uptime").split()[0])


def test_restore_goes_back_to_the_moment_of_the_save(lab):
    name = lab
    on(name, "echo before-the-save > /run/labkit-marker")
    saved_at = uptime(name)
    first = invoke("lab.save", "before", "--lab", name)
    out = first.stdout + first.stderr + invoke("lab.save", "before", "--lab", name, expect=1).stderr
    assert re.search(rf"lab {name} saved as before: \d+ guest\(s\)", out), out
    assert f"lab {name} has a save before already; delete it first" in out  # never overwritten
    listed = invoke("lab.save", "--list", "--lab", name).stdout
    assert re.search(r"^before\s+\S+Z\s+\d+(\.\d+)?[KMG]\s+\d+ guest\(s\) running$", listed, re.M), listed

    on(name, "echo after-the-save > /run/labkit-marker")  # the lab runs on, and changes
    invoke("lab.break", "vm-wrong-vlan", "--lab", name, "--seed", "1")
    time.sleep(3)
    ran_on = uptime(name)
    assert ran_on > saved_at + 3

    invoke("lab.restore", "before", "--lab", name)
    assert on(name, "cat /run/labkit-marker").strip() == "before-the-save"
    resumed = uptime(name)
    assert saved_at < resumed < ran_on, (saved_at, resumed, ran_on)  # it runs on from the save, not from the reboot
    invoke("lab.verify", "--lab", name)  # the fault applied after the save is gone with the rest
    status = invoke("lab.status", "--lab", name).stdout
    assert status.startswith(f"lab {name}: healthy"), status

    invoke("lab.down", "--lab", name)  # a lab that is down comes back too
    invoke("lab.restore", "before", "--lab", name)
    assert on(name, "cat /run/labkit-marker").strip() == "before-the-save"
    assert saved_at < uptime(name) < ran_on
    invoke("lab.verify", "--lab", name)


def test_a_save_of_another_labkit_or_host_is_refused_in_one_sentence(lab):
    name = lab
    invoke("lab.save", "tampered", "--lab", name)
    path = saves.directory(name, "tampered") / "manifest.json"
    manifest = json.loads(path.read_text())
    on(name, "echo untouched > /run/labkit-marker")
    for key, value, says in (("labkit", "0" * 64, "was made by another labkit (0000000000000000; this one is "),
                             ("host", manifest["host"] | {"qemu": "6.2.0"}, "was made on another host (qemu 6.2.0 then, ")):
        path.write_text(json.dumps(manifest | {key: value}))
        run = invoke("lab.restore", "tampered", "--lab", name, expect=1)
        assert run.stderr.startswith(f"labkit: save tampered of lab {name} {says}") and run.stderr.count("\n") == 1, run.stderr
        assert on(name, "cat /run/labkit-marker").strip() == "untouched"  # nothing was touched
    invoke("lab.save", "--delete", "tampered", "--lab", name)
    assert "tampered" not in invoke("lab.save", "--list", "--lab", name).stdout
    run = invoke("lab.restore", "tampered", "--lab", name, expect=1)
    assert run.stderr.startswith(f"labkit: lab {name} has no save tampered (its saves: ")
