"""Adapters: one per real system (OVSDB, netlink, libvirt), thin, no subprocesses where a library exists."""

from __future__ import annotations


class Connection:
    """A connection to one system, usable in `with`: closed when the block ends."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
