"""lab.capture on the host: tcpdump on the interfaces capture.locate found, in their namespace.

One tcpdump per interface (a bond's members each have theirs: tcpdump listens on one interface,
and Linux's `any` device cannot select a VLAN), as this process's children: PR_SET_PDEATHSIG has
the kernel kill them when this process goes, however it goes (Ctrl-C, kill -9, a closed
terminal), and nothing else was created for the capture. Their output is merged here as it
comes: decoded lines (a bond's with the member's name in front), or one pcap stream (each
tcpdump's records after a single file header). The filter is compiled by tcpdump itself (-d)
before anything listens, so a mistake in it is one line.
"""

from __future__ import annotations

import ctypes
import queue
import signal
import struct
import subprocess
import sys
import threading

from ..capture import Request, Tap, command
from ..errors import HostError, LabkitError
from ..host.netns import NETNS_DIR

PR_SET_PDEATHSIG = 1
CHECK_SECONDS = 10.0
PCAP_HEADER = 24  # the file header, then per packet a 16-byte record header and the bytes captured
RECORD = struct.Struct("<IIII")  # tcpdump writes the host's byte order: x86, little-endian


def _dies_with_parent() -> None:  # runs in the child between fork and exec
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _inside(tap: Tap, argv: list[str]) -> list[str]:
    return argv if tap.netns is None else ["nsenter", f"--net={NETNS_DIR}/{tap.netns}", *argv]


def _compile(request: Request, tap: Tap) -> None:
    argv = _inside(tap, command(request, tap.ifnames[0], pcap=False))
    at = argv.index("tcpdump") + 1
    compiled = subprocess.run(argv[:at] + ["-d"] + argv[at:], capture_output=True, text=True, timeout=CHECK_SECONDS)
    if compiled.returncode:
        why = (compiled.stderr.strip().splitlines() or ["it failed"])[-1]
        if "No such device" in why or "doesn't exist" in why:
            raise HostError(f"{tap.label}: {', '.join(tap.ifnames)} is not on this host now; is the lab up? (lab.status)")
        shown = " and ".join(x for x in (f"--vlan {request.vlan}" if request.vlan is not None else "",
                                         f"--filter {request.bpf!r}" if request.bpf else "") if x)
        raise LabkitError(f"{shown or 'the capture'} is not a filter tcpdump accepts ({why})")


def run(request: Request, tap: Tap, say=print) -> int:
    """Capture until --count, --seconds or Ctrl-C; returns 0, or a tcpdump's failing status."""
    _compile(request, tap)
    pcap = request.out is not None
    out = sys.stdout.buffer if request.out in (None, "-") else open(request.out, "wb")  # noqa: SIM115
    say(f"capturing on {tap.label} ({', '.join(tap.ifnames)}{' in ' + tap.netns if tap.netns else ''}); Ctrl-C stops")
    sys.stdout.flush()
    children = [subprocess.Popen(_inside(tap, command(request, ifname, pcap)), stdout=subprocess.PIPE,
                                 preexec_fn=_dies_with_parent) for ifname in tap.ifnames]
    merged: queue.Queue = queue.Queue()
    readers = [threading.Thread(target=_read_pcap if pcap else _read_lines,
                                args=(child.stdout, ifname if len(tap.ifnames) > 1 else "", merged), daemon=True)
               for child, ifname in zip(children, tap.ifnames)]
    for reader in readers:
        reader.start()
    seen, ended, header_written = 0, 0, False
    timer = threading.Timer(request.seconds, merged.put, args=(("stop", None),)) if request.seconds else None
    if timer:
        timer.start()
    try:
        while ended < len(children) and (request.count is None or seen < request.count):
            kind, data = merged.get()
            if kind == "stop":
                break
            if kind == "end":
                ended += 1
            elif kind == "header":
                if not header_written:
                    out.write(data)
                    header_written = True
            else:
                out.write(data)
                out.flush()
                seen += 1
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a capture ends
    finally:
        if timer:
            timer.cancel()
        statuses = _stop(children)
        if out is not sys.stdout.buffer:
            out.close()
    failed = [s for s in statuses if s not in (0, -signal.SIGINT, -signal.SIGTERM)]
    return failed[0] if failed and not seen else 0


def _read_lines(stream, prefix: str, merged: queue.Queue) -> None:
    for line in iter(stream.readline, b""):
        merged.put(("packet", (prefix.encode() + b"  " if prefix else b"") + line))
    merged.put(("end", None))


def _read_pcap(stream, _prefix: str, merged: queue.Queue) -> None:
    header = _exactly(stream, PCAP_HEADER)
    if header is not None:
        merged.put(("header", header))
        while (head := _exactly(stream, RECORD.size)) is not None:
            body = _exactly(stream, RECORD.unpack(head)[2])
            if body is None:
                break
            merged.put(("packet", head + body))
    merged.put(("end", None))


def _exactly(stream, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _stop(children: list[subprocess.Popen]) -> list[int]:
    """SIGINT to each tcpdump still listening (it ends as with Ctrl-C), then their statuses."""
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGINT)
    statuses = []
    for child in children:
        try:
            statuses.append(child.wait(timeout=CHECK_SECONDS))
        except subprocess.TimeoutExpired:
            child.kill()
            statuses.append(child.wait())
    return statuses
