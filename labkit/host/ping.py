"""ICMP echo from inside lab namespaces, to many addresses at once (no `ip netns exec`).

A raw socket opened inside a namespace stays there, so each namespace gets one socket and every
probe goes out at once and again every 100 ms until it answers or the deadline passes: checking
ten targets takes as long as the slowest answer, not ten timeouts.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import time

from .netns import entered

RESEND = 0.1


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _echo(ident: int, seq: int) -> bytes:
    payload = b"labkit-verify"
    header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    return struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ident, seq) + payload


def _socket_in(namespace: str) -> socket.socket:
    with entered(namespace):  # this thread only, for the socket() call
        return socket.socket(socket.AF_INET, socket.SOCK_RAW | socket.SOCK_NONBLOCK, socket.IPPROTO_ICMP)


def ping_many(targets: list[tuple[str, str]], timeout: float = 5.0) -> list[bool]:
    """For each (namespace, address): did the address answer an echo sent from the namespace?"""
    if not targets:
        return []
    sockets = {ns: _socket_in(ns) for ns in dict.fromkeys(ns for ns, _ in targets)}
    ident = (os.getpid() ^ int(time.monotonic() * 1000)) & 0xFFFF
    answered = [False] * len(targets)
    start = time.monotonic()
    try:
        rounds = 0
        while not all(answered) and time.monotonic() - start < timeout:
            for index, (ns, address) in enumerate(targets):
                if not answered[index]:
                    try:
                        sockets[ns].sendto(_echo(ident, index), (address, 0))
                    except OSError:
                        pass  # no route yet: counts as a lost echo
            rounds += 1
            next_round = start + rounds * RESEND
            while (wait := min(next_round, start + timeout) - time.monotonic()) > 0 and not all(answered):
                ready, _, _ = select.select(list(sockets.values()), [], [], wait)
                for sock in ready:
                    _collect(sock, ident, targets, answered)
    finally:
        for sock in sockets.values():
            sock.close()
    return answered


def _collect(sock: socket.socket, ident: int, targets: list[tuple[str, str]], answered: list[bool]) -> None:
    while True:
        try:
            data, (source, _) = sock.recvfrom(2048)
        except BlockingIOError:
            return
        ihl = (data[0] & 0x0F) * 4
        if len(data) < ihl + 8:
            continue
        kind, _code, _sum, rid, seq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
        if kind == 0 and rid == ident and seq < len(targets) and targets[seq][1] == source:
            answered[seq] = True
