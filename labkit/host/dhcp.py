"""DHCP adapter: the dnsmasq that answers for a node's managed networks, inside the node's namespace.

One dnsmasq per node, started and stopped by labkit; its configuration, pid file and leases live
under /run/labkit/<lab>/dhcp/ (found there by observe: no topology needed to stop it). It serves
only the bindings it is given (one MAC to one address per IPAM NIC: AHV's strict mapping), no
DNS, and nothing on an interface it was not given. dnsmasq is a daemon with no library to call:
this module is the one place it is run.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import os
import signal
import subprocess
import time
from pathlib import Path

from ..errors import HostError
from ..hoststate import SeenDhcp
from ..model import DhcpServer
from ..paths import RUN_DIR
from .netns import NETNS_DIR

LEASE_SECONDS = 12 * 3600


def directory(lab: str) -> Path:
    return RUN_DIR / lab / "dhcp"


def config(lab: str, server: DhcpServer) -> str:
    """dnsmasq's configuration for a node: its subnets, options and bindings."""
    base = directory(lab) / server.node
    lines = ["# written by labkit: the DHCP server of a node's managed networks (AHV's IPAM)",
             "port=0", "bind-interfaces", "except-interface=lo", "dhcp-authoritative", "user=root", "group=root",
             f"pid-file={base}.pid", f"dhcp-leasefile={base}.leases", f"log-facility={base}.log"]
    for subnet in server.subnets:
        tag = f"net{subnet.vlan}"
        mask = ipaddress.IPv4Network(subnet.subnet).netmask
        lines += [f"interface={subnet.ifname}",
                  f"dhcp-range=set:{tag},{ipaddress.IPv4Network(subnet.subnet).network_address},static,{mask},{LEASE_SECONDS}",
                  f"dhcp-option=tag:{tag},option:router,{subnet.gateway}"]
        if subnet.dns:
            lines.append(f"dhcp-option=tag:{tag},option:dns-server,{','.join(subnet.dns)}")
        if subnet.domain_name:
            lines.append(f"dhcp-option=tag:{tag},option:domain-name,{subnet.domain_name}")
        if subnet.domain_search:
            lines.append(f"dhcp-option=tag:{tag},option:domain-search,{','.join(subnet.domain_search)}")
        if subnet.tftp_server:
            lines.append(f"dhcp-option=tag:{tag},option:tftp-server,{subnet.tftp_server}")
        if subnet.boot_file:
            lines.append(f"dhcp-option=tag:{tag},option:bootfile-name,{subnet.boot_file}")
    lines += [f"dhcp-host={mac},{address},{hostname}" for mac, address, hostname in server.hosts]
    return "\n".join(lines) + "\n"


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def observe() -> tuple[SeenDhcp, ...]:
    """Every lab's DHCP servers, from their configuration and pid files."""
    seen = []
    for conf in sorted(RUN_DIR.glob("*/dhcp/*.conf")):
        lab, node = conf.parent.parent.name, conf.stem
        seen.append(SeenDhcp(lab, node, _pid(conf.with_suffix(".pid"), conf) is not None, digest(conf.read_text())))
    return tuple(seen)


def start(lab: str, server: DhcpServer) -> None:
    """(Re)start the node's dnsmasq with the server's configuration."""
    stop(lab, server.node)
    base = directory(lab) / server.node
    base.parent.mkdir(parents=True, exist_ok=True)
    conf = base.with_suffix(".conf")
    conf.write_text(config(lab, server))

    # nsenter, not a preexec setns: this process may run threads (ovsdbapp's), and a fork that
    # runs Python before exec is not safe then.
    run = subprocess.run(["nsenter", f"--net={NETNS_DIR}/{server.netns}", "dnsmasq", f"--conf-file={conf}"],
                         capture_output=True, text=True)
    if run.returncode:
        raise HostError(f"dnsmasq for node {server.node} did not start ({run.stderr.strip()[-300:]}); see {base}.log")
    deadline = time.monotonic() + 5
    while _pid(base.with_suffix(".pid"), conf) is None:
        if time.monotonic() > deadline:
            raise HostError(f"dnsmasq for node {server.node} started but wrote no pid file; see {base}.log")
        time.sleep(0.02)


def stop(lab: str, node: str) -> None:
    """Stop the node's dnsmasq, if it is the lab's (its command line names the lab's configuration)."""
    base = directory(lab) / node
    pid = _pid(base.with_suffix(".pid"), base.with_suffix(".conf"))
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.01)
    for suffix in (".pid", ".conf", ".leases"):
        base.with_suffix(suffix).unlink(missing_ok=True)


def _pid(pidfile: Path, conf: Path) -> int | None:
    """The running dnsmasq of that pid file, if its command line is ours (a reused pid is not)."""
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if f"--conf-file={conf}".encode() in cmdline else None


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
