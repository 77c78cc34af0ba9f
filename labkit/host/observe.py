"""Observe: the host's state as the three adapters see it, in one HostState.

Reading the host takes tens of milliseconds; importing pyroute2, ovsdbapp and libvirt takes
hundreds. So each system is read by a process of its own, forked when a command starts
(`start()`), while the command itself imports and parses its topology; `Reading.result()`
collects what they saw. A reading taken before the command holds its lab's lock is used only if
no labkit command changed the host since it began (state.generation); otherwise it is taken again.

This module imports next to nothing itself, so that the readers are forked as early as can be;
the types they return (hoststate, which the command needs too) are imported once before the
forks, not once in each reader; each reader imports its adapter's library after the fork. The
reader of libvirt is quick (lab.down destroys the lab's domains while the others still read).
"""

from __future__ import annotations

import importlib
import os
import pickle
import threading
import time

from .. import state
from . import DEADLINE, bounded, datapath_type, hung, netem, uefi


def _read_links():
    from .netlink import Netlink

    with Netlink() as netlink:
        return netlink.observe()


def _read_ovs():
    from .ovs import Ovs

    with Ovs() as ovs:
        return ovs.observe()


def _read_libvirt():
    from .virt import Virt

    with Virt() as virt:
        return virt.observe()


READERS = {"links": _read_links, "ovs": _read_ovs, "libvirt": _read_libvirt}
SYSTEMS = {"links": "netlink", "ovs": "OVSDB", "libvirt": "libvirt"}


class Reading:
    """The host being read by one forked process per system. A process that already runs other
    threads (a test runner, say) reads in-process instead: forking it would copy their locks."""

    def __init__(self):
        importlib.import_module("labkit.hoststate")  # the readers' types, and the command's: imported once, before the forks
        self.generation = state.generation()
        self.started = time.monotonic()
        forking = threading.active_count() == 1
        self._children = {name: _fork(reader) for name, reader in READERS.items()} if forking else None
        self._parts: dict = {}

    def part(self, system: str):
        """What one reader saw ("links", "ovs", "libvirt"): waits for that reader only, at most the
        host deadline from when the reading began."""
        if system not in self._parts:
            if self._children is None:
                self._parts[system] = bounded(SYSTEMS[system], "reading the host", READERS[system])
            else:
                # a little past the deadline, so that a reader's own bound (it names the daemon) answers first
                self._parts[system] = _collect(*self._children[system], system, self.started + DEADLINE * 1.5 + 2)
        return self._parts[system]

    def result(self):
        """The HostState the readers saw (waits for them; raises what a reader raised)."""
        from ..hoststate import HostState
        from . import dhcp, relay

        (links, namespaces), bridges, (networks, domains, pools) = (self.part(system) for system in READERS)
        return HostState(bridges, links, namespaces, networks, domains, datapath_type(), dhcp.observe(), pools, uefi(),
                     relays=relay.observe(), netem=netem())

    def fresh(self) -> bool:
        """No labkit command changed the host since the reading began."""
        return state.generation() == self.generation


def start() -> Reading:
    return Reading()


def observe(lab: str | None, reading: Reading | None = None, host=None):
    """The host as `lab` sees it (links a killed command of its left unmarked are adopted), from
    `reading` when it is still fresh, else through `host`'s open connections (a command that
    changes the host has them anyway), else by new readers. Call with the lab's lock held.
    `lab` None: every lab's objects as marked (lab.list), nothing adopted."""
    if reading is not None and reading.fresh():
        seen = reading.result()
    elif host is not None:
        seen = read_with(host.netlink, host.ovs, host.virt)
    else:
        seen = Reading().result()
    return seen if lab is None else seen.adopt(lab, state.intents(lab))


def read_with(netlink, ovs, virt):
    """The HostState, read through connections already open."""
    from ..hoststate import HostState
    from . import dhcp, relay

    (links, namespaces), bridges, (networks, domains, pools) = netlink.observe(), ovs.observe(), virt.observe()
    return HostState(bridges, links, namespaces, networks, domains, datapath_type(), dhcp.observe(), pools, uefi(),
                     relays=relay.observe(), netem=netem())


def _fork(reader) -> tuple[int, int]:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the reader: import its adapter, read, send the result, exit without cleanup
        os.close(read_end)
        from ..errors import LabkitError

        try:
            outcome = ("ok", reader())
        except LabkitError as exc:
            outcome = ("error", str(exc))
        except BaseException as exc:  # a bug: reported by the parent as one line
            outcome = ("crash", f"{type(exc).__name__}: {exc}")
        with os.fdopen(write_end, "wb") as out:
            out.write(pickle.dumps(outcome))
        os._exit(0)
    os.close(write_end)
    return pid, read_end


def _collect(pid: int, fd: int, system: str, deadline: float):
    """A reader's answer, read from its pipe until it closes or the deadline passes (then the
    reader is killed: a daemon that hangs does not hang the command)."""
    import select
    import signal

    from ..errors import HostError

    data = b""
    with os.fdopen(fd, "rb", buffering=0) as pipe:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([pipe], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise hung(SYSTEMS[system], "reading the host", DEADLINE)
            chunk = pipe.read(1 << 16)
            if not chunk:
                break
            data += chunk
    os.waitpid(pid, 0)
    if not data:
        raise HostError("a process reading the host died without an answer; run the command again")
    kind, value = pickle.loads(data)
    if kind == "ok":
        return value
    if kind == "error":
        raise HostError(value)
    raise RuntimeError(value)
