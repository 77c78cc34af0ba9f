"""lab.capture (pure): the user's values checked for tcpdump, and tcpdump's command line on the
interfaces a place of the lab names (where.py: NODE/eth2, NODE/br0-up, VM/N, cvm/1, tor/PORT...).

Everything is captured by tcpdump on interfaces that already exist (nothing is added to the lab
or the host, so nothing can be left behind); a bond's members by one tcpdump each, their packets
merged as they come (features/capture.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import LabkitError
from .where import Tap

MAX_COUNT = 10_000_000
MAX_SECONDS = 24 * 3600
_FILTER = re.compile(r"[\x20-\x7e]{1,1000}")  # printable ASCII: what BPF's grammar is written in


@dataclass(frozen=True)
class Request:
    where: str
    vlan: int | None = None
    bpf: str | None = None
    out: str | None = None  # a pcap file; "-" for standard output
    count: int | None = None
    seconds: float | None = None


def check(request: Request, tap: Tap) -> None:
    """The user's values, checked for tcpdump before it sees them."""
    if request.vlan is not None:
        if not 1 <= request.vlan <= 4094:
            raise LabkitError(f"--vlan {request.vlan} is not a VLAN id; give 1-4094")
        if not tap.tagged:
            raise LabkitError(f"{tap.label} is an access port: its frames carry no VLAN tag; capture on an uplink, "
                              f"a bond or a switch port to see VLAN {request.vlan}")
    if request.bpf is not None and not _FILTER.fullmatch(request.bpf):
        raise LabkitError("--filter is a tcpdump (BPF) expression: printable ASCII, at most 1000 characters")
    if request.count is not None and not 1 <= request.count <= MAX_COUNT:
        raise LabkitError(f"--count {request.count} is not 1-{MAX_COUNT}")
    if request.seconds is not None and not 0 < request.seconds <= MAX_SECONDS:
        raise LabkitError(f"--seconds {request.seconds} is not more than 0 and at most {MAX_SECONDS}")
    if request.out is not None and request.out != "-" and (not request.out or "\0" in request.out):
        raise LabkitError("-w takes a file name, or - for standard output")


def expression(request: Request) -> str:
    """The BPF expression: the VLAN, then the user's filter."""
    parts = [f"vlan {request.vlan}"] if request.vlan is not None else []
    if request.bpf:
        parts.append(f"({request.bpf})")
    return " and ".join(parts)


def command(request: Request, ifname: str, pcap: bool) -> list[str]:
    """tcpdump's command line on one interface (without the namespace it runs in): decoded lines,
    or (`pcap`) a pcap stream on stdout, packet by packet."""
    argv = ["tcpdump", "-i", ifname, "-n", "-e", "-Z", "root"]
    argv += ["-U", "-w", "-"] if pcap else ["-l"]  # a packet, or a line, as soon as it is seen
    if request.count is not None:
        argv += ["-c", str(request.count)]
    bpf = expression(request)
    return argv + (["--", bpf] if bpf else [])
