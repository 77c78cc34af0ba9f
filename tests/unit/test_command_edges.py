"""Edges of the commands (issue 12, item 5): values the options do not allow are refused in one
sentence, and a guest's output cannot drive the operator's terminal."""

from __future__ import annotations

import subprocess
import sys

import pytest

from labkit import commands, model, pipeline
from labkit.errors import LabkitError

from ..conftest import REPO


def test_an_unknown_profile_is_refused_not_saved():
    run = subprocess.run([sys.executable, "-m", "invoke", "lab.plan", "--offline", "--profile", "huge"],
                         cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 1 and run.stderr.strip() == "labkit: --profile huge is not a profile; use lab or fidelity"


def test_link_side_must_be_node_or_tor():
    lab = model.resolve(pipeline.load(None))
    with pytest.raises(LabkitError, match=r"^--side sideways is not valid; use node"):
        commands._link_targets(lab, lab.node_names[0], "eth2", "sideways")
    assert commands._link_targets(lab, lab.node_names[0], "eth2", "tor") == ["seed-n1-eth2"]


def test_guest_output_reaches_the_terminal_as_text():
    sys.path.insert(0, str(REPO))
    import tasks

    assert tasks.printable("a\x1b]0;owned\x07b\x1b[2J\tc\n\x9b5m é") == "a^[]0;owned^Gb^[[2J\tc\n\\x9b5m é"


def test_an_unwrapped_libvirt_error_is_one_sentence_not_an_internal_error():
    import libvirt
    from invoke import Exit

    sys.path.insert(0, str(REPO))
    import tasks

    @tasks.user_errors
    def task():
        exc = libvirt.libvirtError("gone")
        exc.err = (libvirt.VIR_ERR_NO_DOMAIN, 0, "Domain not found: no domain with matching name 'x'", 0, "", None, None, 0, 0)
        raise exc

    with pytest.raises(Exit) as info:
        task()
    assert info.value.code == 4 and str(info.value.message).startswith(
        "labkit: libvirt refused (Domain not found: no domain with matching name 'x'); ")
