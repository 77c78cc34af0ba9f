"""ICMP echo from inside a lab namespace (raw socket opened in the namespace; no `ip netns exec`)."""

from __future__ import annotations

import os
import select
import socket
import struct
import time

from pyroute2 import netns


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def ping(namespace: str, address: str, count: int = 3, timeout: float = 2.0) -> bool:
    """True when `address` answers any of `count` echo requests sent from `namespace`."""
    netns.pushns(namespace)
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    finally:
        netns.popns()
    ident = os.getpid() & 0xFFFF
    with sock:
        for seq in range(1, count + 1):
            header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
            payload = b"labkit-verify"
            packet = struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ident, seq) + payload
            try:
                sock.sendto(packet, (address, 0))
            except OSError:
                time.sleep(timeout)  # no route yet: count it as a lost echo
                continue
            deadline = time.monotonic() + timeout
            while (remaining := deadline - time.monotonic()) > 0:
                ready, _, _ = select.select([sock], [], [], remaining)
                if not ready:
                    break
                data, (source, _) = sock.recvfrom(2048)
                ihl = (data[0] & 0x0F) * 4
                kind, _code, _sum, rid, rseq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
                if kind == 0 and rid == ident and rseq == seq and source == address:
                    return True
    return False
