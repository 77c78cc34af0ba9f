"""Integration tests: real OVS, libvirt, namespaces and TCG guests on this machine (root only).

`invoke test` starts the services and builds the guest image first. These tests
create labs and foreign objects of their own and remove them at the end.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from ..conftest import REPO

pytestmark = pytest.mark.host


def pytest_collection_modifyitems(items):
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.host)
            if os.geteuid() != 0:
                item.add_marker(pytest.mark.skip(reason="needs root (run through `invoke test` as root)"))


def suite_lab_names() -> set[str]:
    """The labs this suite brings up: its topologies', the examples' and the default lab's names,
    and every quoted lab name its tests write (inline YAML, --lab, renamed copies)."""
    names = set()
    for path in [*REPO.glob("tests/topologies/*.yaml"), *REPO.glob("examples/*.yaml"), REPO / "labkit" / "default.yaml"]:
        names |= set(re.findall(r"^name: ([a-z0-9-]+)\s*$", path.read_text(), re.M))
    for path in REPO.glob("tests/integration/*.py"):
        text = path.read_text()
        names |= set(re.findall(r'^\s*name: ([a-z0-9-]+)\s*$', text, re.M))
        names |= set(re.findall(r'"name: ([a-z0-9-]+)', text))
        names |= set(re.findall(r'"--lab", "([a-z0-9-]+)"', text))
        names |= set(re.findall(r'names_of\("([a-z0-9-]+)"\)', text))
    return names


@pytest.fixture(scope="session", autouse=True)
def no_suite_lab_left_by_an_earlier_run():
    """An interrupted earlier run (a killed CI job, a dev's session) may have left one of this suite's
    labs up: it holds AHV's names (eth2, virbr0...) and the tests would meet fallbacks. Only the
    suite's own labs are taken down; a user's other labs stay."""
    if os.geteuid() != 0:
        yield
        return
    listed = subprocess.run([sys.executable, "-m", "invoke", "lab.list", "--json"], cwd=REPO, capture_output=True,
                            text=True, timeout=600)
    if listed.returncode == 0:
        owned = suite_lab_names()
        for lab in json.loads(listed.stdout)["labs"]:
            if lab["name"] in owned:
                invoke("lab.down", "--lab", lab["name"])
    yield


def sh(cmd: str, check: bool = True) -> str:
    run = subprocess.run(cmd, shell=True, capture_output=True, text=True)
    if check and run.returncode:
        raise AssertionError(f"{cmd!r} failed ({run.returncode}): {run.stderr.strip()}")
    return run.stdout


def invoke(*args: str, expect: int = 0) -> subprocess.CompletedProcess:
    run = subprocess.run([sys.executable, "-m", "invoke", *args], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == expect, f"invoke {' '.join(args)} exited {run.returncode}:\n{run.stdout}\n{run.stderr}"
    assert "Traceback" not in run.stderr, run.stderr
    return run


def root_namespace() -> tuple:
    """The workstation's own addresses and routes (what labkit must never change)."""
    addrs = sorted((a["ifname"], i["local"], i["prefixlen"]) for a in json.loads(sh("ip -j addr"))
                   for i in a.get("addr_info", []))
    routes = sorted(json.dumps(r, sort_keys=True) for family in ("-4", "-6")
                    for r in json.loads(sh(f"ip {family} -j route show table all")))
    return addrs, routes


def labkit_leftovers(lab: str) -> list[str]:
    """Everything on the host that still belongs to `lab`, by every marker labkit uses."""
    left = []
    for line in sh("ovs-vsctl --format=json --columns=name,external_ids list Bridge").splitlines():
        data = json.loads(line)
        for name, ext in data["data"]:
            if ["labkit-lab", lab] in ext[1]:
                left.append(f"OVS bridge {name}")
    for name in sh("virsh -c qemu:///system list --all --name").split():
        if f'name="{lab}"' in sh(f"virsh -c qemu:///system dumpxml --inactive {name}"):
            left.append(f"domain {name}")
    for name in sh("virsh -c qemu:///system net-list --all --name").split():
        if f'name="{lab}"' in sh(f"virsh -c qemu:///system net-dumpxml --inactive {name}"):
            left.append(f"network {name}")
    left += [f"netns {n}" for n in sh("ip netns list").split() if n.startswith(f"labkit.{lab}.")]
    for link in json.loads(sh("ip -j -d link")):
        if link.get("ifalias", "").startswith(f"labkit:{lab}:"):
            left.append(f"link {link['ifname']}")
    for pid in sh(f"pgrep -f -- '--conf-file=/run/labkit/{lab}/dhc[p]/' || true").split():
        left.append(f"dnsmasq {pid}")
    for pid in sh(f"pgrep -f -- '-m labkit[.]acli_relay --lab {lab}$' || true").split():
        left.append(f"acli relay {pid}")
    for name in sh("virsh -c qemu:///system pool-list --all --name").split():
        if f"/var/lib/labkit/storage/{lab}/" in sh(f"virsh -c qemu:///system pool-dumpxml {name}"):
            left.append(f"storage pool {name}")
    for path in (f"/run/labkit/{lab}", f"/run/labkit/{lab}.lock", f"/var/log/labkit/{lab}", f"/var/lib/labkit/storage/{lab}"):
        if os.path.exists(path):
            left.append(f"file {path}")
    return left


def lab_up_for_module(lab: str, topology: str):
    """A module's lab: what an earlier, killed run left is taken down, the lab brought up, and at
    the end taken down with nothing of it left (use as `yield from` in a module fixture)."""
    invoke("lab.down", "--lab", lab)
    invoke("lab.up", "--topology", topology)
    yield
    invoke("lab.down", "--lab", lab)
    assert labkit_leftovers(lab) == []


class Terminal:
    """A labkit task on a pseudo-terminal, as a user at a keyboard runs it."""

    def __init__(self, *args: str, home: str | None = None):
        import pty

        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the task
            os.chdir(REPO)
            if home:
                os.environ["HOME"] = home
            os.execv(sys.executable, [sys.executable, "-m", "invoke", *args])
        self.seen = b""

    def read_until(self, marker: bytes, timeout: float = 30, since: int = 0) -> None:
        """Read until `marker` is seen (after `since`: what was seen before a command counts not)."""
        import select
        import time

        deadline = time.monotonic() + timeout
        while marker not in self.seen[since:]:
            assert time.monotonic() < deadline, f"no {marker!r} on the terminal; got {self.seen[-500:]!r}"
            if select.select([self.fd], [], [], 0.5)[0]:
                self.seen += os.read(self.fd, 4096)

    def write(self, data: bytes) -> None:
        os.write(self.fd, data)

    def settle(self) -> None:
        """Read until the guest's shell is quiet, answering busybox's cursor-position questions as
        a terminal does (it asks once per prompt)."""
        import select

        answered = 0
        while select.select([self.fd], [], [], 1.5)[0] or self.seen.count(b"\x1b[6n") > answered:
            if self.seen.count(b"\x1b[6n") > answered:
                self.write(b"\x1b[1;5R")
                answered += 1
            else:
                self.seen += os.read(self.fd, 4096)

    def exit_status(self) -> int:
        _, status = os.waitpid(self.pid, 0)
        os.close(self.fd)
        return os.waitstatus_to_exitcode(status)
