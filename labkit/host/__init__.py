"""Adapters: one per real system (OVSDB, netlink, libvirt), thin, no subprocesses where a library exists."""
