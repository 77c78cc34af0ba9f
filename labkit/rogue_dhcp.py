"""A rogue DHCP server, as lab.break's `rogue-dhcp` plugs one into a VLAN: it broadcasts a
DHCPOFFER every half second, asked or not, from the device of an intruder namespace.

AHV's IPAM keeps a managed network's DHCP on the node (its OpenFlow rules send the VMs' requests
to the node's server and drop the offers VMs send), so a server that only answers requests is
never heard there: a rogue device on the wire that offers addresses unasked is. It also holds the
DHCP port, as a server does. Run by labkit/host/dhcp.py inside the namespace:

    python -m labkit.rogue_dhcp --conf-file=/run/labkit/<lab>/dhcp/<name>.conf

and stopped by it (SIGTERM) like a node's dnsmasq: lab.up removes it with the rest of the fault.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import struct
import sys
import time
from pathlib import Path

PERIOD = 0.5  # seconds between offers
ETH_P_IP = 0x0800


def _checksum(data: bytes) -> int:
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF


def offer(mac: bytes, server: str, offered: str, netmask: str, router: str, xid: int) -> bytes:
    """An Ethernet frame: a broadcast DHCPOFFER of `offered` from `server`."""
    bootp = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 2, 1, 6, 0, xid, 0, 0x8000, bytes(4),
                        socket.inet_aton(offered), socket.inet_aton(server), bytes(4), b"\xff" * 6, b"", b"")
    options = (b"\x63\x82\x53\x63" + b"\x35\x01\x02" + b"\x36\x04" + socket.inet_aton(server)
               + b"\x01\x04" + socket.inet_aton(netmask) + b"\x03\x04" + socket.inet_aton(router)
               + b"\x33\x04" + struct.pack("!I", 3600) + b"\xff")
    payload = bootp + options
    udp = struct.pack("!HHHH", 67, 68, 8 + len(payload), 0) + payload  # checksum 0: none (IPv4 allows it)
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, socket.IPPROTO_UDP, 0,
                         socket.inet_aton(server), b"\xff" * 4)
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return b"\xff" * 6 + mac + struct.pack("!H", ETH_P_IP) + header + udp


def read_config(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#"))


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].startswith("--conf-file="):
        print("usage: python -m labkit.rogue_dhcp --conf-file=PATH", file=sys.stderr)
        return 2
    conf = read_config(Path(argv[0].split("=", 1)[1]))
    for key in ("server", "offer", "netmask", "router"):
        ipaddress.IPv4Address(conf[key])
    raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    raw.bind((conf["interface"], 0))
    mac = raw.getsockname()[4]
    held = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # the DHCP port, as a server holds it
    held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    held.bind(("0.0.0.0", 67))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    Path(conf["pid-file"]).write_text(f"{os.getpid()}\n")
    xid = 0x10C0FFEE
    while True:
        raw.send(offer(mac, conf["server"], conf["offer"], conf["netmask"], conf["router"], xid))
        xid += 1
        time.sleep(PERIOD)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
