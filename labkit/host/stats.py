"""Counts of calls into the host's systems, for bench/ (OVSDB transactions, libvirt API calls).

Off unless LABKIT_STATS names a file: then every count appends one line to it, from whichever
process makes the call (the forked readers included).
"""

from __future__ import annotations

import os

_PATH = os.environ.get("LABKIT_STATS")


def enabled() -> bool:
    return bool(_PATH)


def count(what: str) -> None:
    if _PATH:
        fd = os.open(_PATH, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, f"{what}\n".encode())
        finally:
            os.close(fd)


class Counted:
    """A libvirt object whose method calls are counted; the libvirt objects it returns are too."""

    def __init__(self, target, kinds: tuple[type, ...]):
        self._target, self._kinds = target, kinds

    def __getattr__(self, name: str):
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            count("libvirt call")
            result = attr(*args, **kwargs)
            if isinstance(result, self._kinds):
                return Counted(result, self._kinds)
            if isinstance(result, list) and result and isinstance(result[0], self._kinds):
                return [Counted(r, self._kinds) for r in result]
            return result

        return call
