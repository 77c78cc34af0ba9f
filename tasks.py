"""labkit's command line: `invoke --list` shows every task, `invoke --help TASK` explains one."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

from invoke import Collection, Exit, task

from labkit import pipeline, render, schema
from labkit.errors import LabkitError, TopologyError
from labkit.hoststate import HostState

TOPOLOGY_HELP = "topology YAML file (default: the embedded seed node, labkit/default.yaml)"


def user_errors(fn):
    """Print a LabkitError as its one sentence and exit with its code: no traceback for user mistakes."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TopologyError as exc:  # already one located sentence per problem
            raise Exit(str(exc), code=exc.exit_code) from None
        except LabkitError as exc:
            raise Exit(f"labkit: {exc}", code=exc.exit_code) from None

    return wrapper


# --------------------------------------------------------------------------- lab


@task(help={"topology": TOPOLOGY_HELP, "profile": "lab (default: fits a laptop) or fidelity (AHV's sizes)",
            "out": "write one <name>.xml per network and domain into this directory instead of printing"})
@user_errors
def render_(c, topology=None, profile=None, out=None):
    """Print the lab's libvirt XML, AHV-faithful (locked memory, passthrough, KVM), schema-checked."""
    topo = pipeline.load(topology, profile)
    desired = pipeline.desire(topo, HostState(), render.Adaptation.ahv())
    for name, xml in desired.docs.items():
        problems = schema.problems(xml)
        if problems:
            raise LabkitError(f"rendered {name} fails libvirt's schema ({problems[0]}); this is a labkit bug, please report it")
    if out:
        target = Path(out)
        target.mkdir(parents=True, exist_ok=True)
        for name, xml in desired.docs.items():
            (target / f"{name}.xml").write_text(xml)
        print(f"wrote {len(desired.docs)} documents to {target}/", file=sys.stderr)
        return
    for name, xml in desired.docs.items():
        print(f"<!-- {name} -->")
        print(xml, end="")


@task(help={"topology": TOPOLOGY_HELP, "profile": "lab or fidelity (overrides the file's)"})
@user_errors
def plan_(c, topology=None, profile=None):
    """Show what `lab.up` would change on this host, without changing anything."""
    topo = pipeline.load(topology, profile)
    host = HostState()
    desired = pipeline.desire(topo, host, render.Adaptation())
    print(pipeline.plan_up(desired, host))


# --------------------------------------------------------------------------- tests


@task(help={"pytest_args": "extra arguments for pytest, e.g. '-k plan -x'"})
def test(c, pytest_args=""):
    """Run the whole test suite: unit tests, then integration tests on real OVS, libvirt and TCG guests."""
    result = c.run(f"{sys.executable} -m pytest -ra {pytest_args}", warn=True, pty=False)
    if result.exited == 5:  # pytest: nothing collected - a suite that ran nothing has not passed
        raise Exit("labkit: pytest collected no tests; check the selection given with --pytest-args", code=1)
    if result.exited:
        raise Exit(code=result.exited)


lab = Collection("lab")
lab.add_task(render_, "render")
lab.add_task(plan_, "plan")

ns = Collection(lab, test)
