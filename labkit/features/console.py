"""An interactive serial console over a libvirt stream (what `virsh console` does), Ctrl-] to leave."""

from __future__ import annotations

import os
import sys
import termios
import threading
import tty

import libvirt

from ..errors import HostError

ESCAPE = b"\x1d"  # Ctrl-]


def attach(conn: libvirt.virConnect, domain: str) -> None:
    try:
        dom = conn.lookupByName(domain)
        stream = conn.newStream(0)
        dom.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
    except libvirt.libvirtError as exc:
        raise HostError(f"cannot open the console of {domain} ({exc.get_error_message()}); is it running?") from None
    done = threading.Event()

    def pump_out() -> None:
        while not done.is_set():
            try:
                data = stream.recv(4096)
            except libvirt.libvirtError:
                break
            if not data:
                break
            os.write(sys.stdout.fileno(), data)
        done.set()

    print(f"Connected to {domain}'s serial console; Ctrl-] leaves.\r", file=sys.stderr)
    threading.Thread(target=pump_out, daemon=True).start()
    interactive = sys.stdin.isatty()
    saved = termios.tcgetattr(sys.stdin) if interactive else None
    try:
        if interactive:
            tty.setraw(sys.stdin.fileno())
        stream.send(b"\n")
        while not done.is_set():
            data = os.read(sys.stdin.fileno(), 1024)
            if not data or ESCAPE in data:
                break
            stream.send(data)
    finally:
        done.set()
        if saved is not None:
            termios.tcsetattr(sys.stdin, termios.TCSADRAIN, saved)
        try:
            stream.abort()
        except libvirt.libvirtError:
            pass
