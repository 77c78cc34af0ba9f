"""Entering a network namespace for a moment, from one thread (setns(2) is per thread).

Sockets made inside a namespace stay there, so a thread enters, makes its socket and leaves.
A namespace that is gone raises FileNotFoundError: nothing here ever creates one (pyroute2's own
helpers create a missing namespace by default). Plain ctypes, so that commands which only ping
do not import pyroute2.
"""

from __future__ import annotations

import contextlib
import ctypes
import os

NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextlib.contextmanager
def entered(namespace: str):
    """The calling thread inside `namespace` for the block, then back where it was."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(f"{NETNS_DIR}/{namespace}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)
