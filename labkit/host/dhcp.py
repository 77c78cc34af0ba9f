"""DHCP adapter: the dnsmasq that answers for a node's managed networks, inside the node's namespace.

One dnsmasq per node, started and stopped by labkit; its configuration, pid file and leases live
under /run/labkit/<lab>/dhcp/ (root's own, 0700; found there by observe: no topology needed to
stop it). It serves only the bindings it is given (one MAC to one address per IPAM NIC: AHV's
strict mapping), no DNS, nothing on an interface it was not given, and it gives up root once its
sockets and files are open (`user=`). dnsmasq is a daemon with no library to call: this module is
the one place it is run, and `config` the one place its configuration is written, from typed
values each checked again for what dnsmasq reads (no value can start a line of its own).
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import os
import pwd
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from .. import state, values
from ..errors import HostError
from ..hoststate import SeenDhcp
from ..model import DhcpServer
from ..paths import RUN_DIR
from .netns import NETNS_DIR

LEASE_SECONDS = 12 * 3600
STOP_SECONDS = 5.0  # SIGTERM, then SIGKILL
RUN_SECONDS = 10.0  # dnsmasq --test, and the start until it has written its pid file
_SAFE = re.compile(r"[A-Za-z0-9_.:/+-]+")  # every value labkit writes: no space, comma, '#', '=' or newline
_NETNS_LINE = re.compile(r"^# netns=(\S+)$", re.MULTILINE)


def directory(lab: str) -> Path:
    return RUN_DIR / lab / "dhcp"


def _user() -> str:
    """The unprivileged user dnsmasq runs as after it has opened its sockets and files (Debian's
    dnsmasq-base makes `dnsmasq`)."""
    for name in ("dnsmasq", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name).pw_name
    return "root"


def _value(text: object) -> str:
    """One value of a dnsmasq option, as written: refused unless it is a plain token."""
    text = str(text)
    if not _SAFE.fullmatch(text):
        raise HostError(f"refusing to write {values.shown(text)} into dnsmasq's configuration; this is a labkit bug: "
                        f"report it")
    return text


def _values(*items: object) -> str:
    return ",".join(_value(item) for item in items)


def config(lab: str, server: DhcpServer) -> str:
    """dnsmasq's configuration for a node: its subnets, options and bindings (a rogue's: what
    labkit/rogue_dhcp.py offers)."""
    base = directory(lab) / server.node
    if server.rogue:
        subnet = server.subnets[0]
        return "\n".join(["# written by labkit: a rogue DHCP server that lab.break plugged in (labkit/rogue_dhcp.py)",
                          f"# netns={_value(server.netns)}", f"interface={_value(subnet.ifname)}",
                          f"server={_value(ipaddress.IPv4Address(subnet.server))}",
                          f"offer={_value(ipaddress.IPv4Address(server.hosts[0][1]))}",
                          f"netmask={_value(ipaddress.IPv4Network(subnet.subnet).netmask)}",
                          f"router={_value(ipaddress.IPv4Address(subnet.gateway))}",
                          f"pid-file={_value(f'{base}.pid')}"]) + "\n"
    lines = ["# written by labkit: the DHCP server of a node's managed networks (AHV's IPAM)",
             f"# netns={_value(server.netns)}",
             "port=0", "bind-interfaces", "except-interface=lo", "dhcp-authoritative",
             f"user={_value(_user())}", "group=nogroup",
             f"pid-file={_value(f'{base}.pid')}", f"dhcp-leasefile={_value(f'{base}.leases')}",
             f"log-facility={_value(f'{base}.log')}"]
    for subnet in server.subnets:
        tag = f"net{int(subnet.vlan)}"
        network = ipaddress.IPv4Network(subnet.subnet)
        lines += [f"interface={_value(subnet.ifname)}",
                  f"dhcp-range=set:{tag},{_values(network.network_address, 'static', network.netmask, LEASE_SECONDS)}",
                  f"dhcp-option=tag:{tag},option:router,{_value(ipaddress.IPv4Address(subnet.gateway))}"]
        if subnet.dns:
            lines.append(f"dhcp-option=tag:{tag},option:dns-server,{_values(*map(ipaddress.IPv4Address, subnet.dns))}")
        if subnet.domain_name:
            lines.append(f"dhcp-option=tag:{tag},option:domain-name,{_value(values.dns_name(subnet.domain_name))}")
        if subnet.domain_search:
            lines.append(f"dhcp-option=tag:{tag},option:domain-search,"
                         f"{_values(*map(values.dns_name, subnet.domain_search))}")
        if subnet.tftp_server:
            lines.append(f"dhcp-option=tag:{tag},option:tftp-server,{_value(values.host_or_address(subnet.tftp_server))}")
        if subnet.boot_file:
            lines.append(f"dhcp-option=tag:{tag},option:bootfile-name,{_value(values.boot_file(subnet.boot_file))}")
    lines += [f"dhcp-host={_values(mac, ipaddress.IPv4Address(address), values.dns_name(hostname))}"
              for mac, address, hostname in server.hosts]
    return "\n".join(lines) + "\n"


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def observe() -> tuple[SeenDhcp, ...]:
    """Every lab's DHCP servers, from their configuration and pid files, and their processes."""
    seen = []
    for conf in sorted(RUN_DIR.glob("*/dhcp/*.conf")):
        text = (state.read_private(conf) or b"").decode(errors="replace")
        lab, node = conf.parent.parent.name, conf.stem
        pid = _pid(conf.with_suffix(".pid"), conf)
        netns = _NETNS_LINE.search(text)
        seen.append(SeenDhcp(lab, node, pid is not None, digest(text),
                             problem=_problem(pid, netns.group(1) if netns else None) if pid is not None else ""))
    return tuple(seen)


def _problem(pid: int, netns: str | None) -> str:
    """Why a running dnsmasq does not serve its node ("" when it does): stopped, in a namespace
    that is no longer the node's (the namespace was deleted and made anew), or not listening."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if status in ("T", "t"):
            return "stopped (SIGSTOP)"
        if netns is None or os.stat(f"/proc/{pid}/ns/net").st_ino != os.stat(f"{NETNS_DIR}/{netns}").st_ino:
            return "not in the node's namespace (it was made anew)"
        sockets = {f"socket:[{os.stat(f'/proc/{pid}/fd/{fd}').st_ino}]" for fd in os.listdir(f"/proc/{pid}/fd")
                   if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")}
        listening = Path(f"/proc/{pid}/net/udp").read_text().splitlines()[1:]
    except OSError:
        return "not in the node's namespace (it was made anew)"
    if not any(line.split()[1].endswith(":0043") and f"socket:[{line.split()[9]}]" in sockets for line in listening):
        return "not listening on the DHCP port"
    return ""


def start(lab: str, server: DhcpServer) -> None:
    """(Re)start the node's dnsmasq with the server's configuration: checked by dnsmasq first, so a
    configuration it would refuse leaves the running one serving."""
    folder = state.private_dir(directory(lab))
    base = folder / server.node
    conf = base.with_suffix(".conf")
    candidate = folder / f".{server.node}.conf.next"
    text = config(lab, server)
    state.write_private(candidate, text)
    test = _run(["dnsmasq", "--test", f"--conf-file={candidate}"], "check the configuration of") \
        if not server.rogue else subprocess.CompletedProcess([], 0)
    if test.returncode:
        candidate.unlink(missing_ok=True)
        raise HostError(f"dnsmasq refuses the configuration for node {server.node} ({test.stderr.strip()[-300:]}); "
                        f"the running one keeps serving")
    stop(lab, server.node)
    os.replace(candidate, conf)
    state.write_private(base.with_suffix(".leases"), b"")  # root's, 0600: dnsmasq opens it before giving up root

    # nsenter, not a preexec setns: this process may run threads (ovsdbapp's), and a fork that
    # runs Python before exec is not safe then.
    if server.rogue:  # not a daemon by itself: started in a session of its own, it writes its pid file
        with open(base.with_suffix(".log"), "ab") as log:
            subprocess.Popen(["nsenter", f"--net={NETNS_DIR}/{server.netns}", sys.executable, "-m",
                              "labkit.rogue_dhcp", f"--conf-file={conf}"], stdin=subprocess.DEVNULL, stdout=log,
                             stderr=log, start_new_session=True, cwd=str(Path(__file__).resolve().parents[2]))
        run = subprocess.CompletedProcess([], 0)
    else:
        run = _run(["nsenter", f"--net={NETNS_DIR}/{server.netns}", "dnsmasq", f"--conf-file={conf}"], "start")
    if run.returncode:
        raise HostError(f"dnsmasq for node {server.node} did not start ({run.stderr.strip()[-300:]}); see {base}.log")
    deadline = time.monotonic() + RUN_SECONDS
    while _pid(base.with_suffix(".pid"), conf) is None:
        if time.monotonic() > deadline:
            raise HostError(f"dnsmasq for node {server.node} started but wrote no pid file; see {base}.log")
        time.sleep(0.02)


def _run(argv: list[str], what: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=RUN_SECONDS)
    except subprocess.TimeoutExpired:
        raise HostError(f"dnsmasq did not {what} within {RUN_SECONDS:.0f} s; see `ps -ef | grep dnsmasq`") from None


def stop(lab: str, node: str) -> None:
    """Stop the node's dnsmasq, if it is the lab's (its command line names the lab's configuration):
    SIGTERM, then SIGKILL for one that ignores it; its files go once it is gone."""
    base = directory(lab) / node
    pid = _pid(base.with_suffix(".pid"), base.with_suffix(".conf"))
    if pid is not None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            if sig == signal.SIGTERM:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)  # a stopped one cannot act on SIGTERM
            deadline = time.monotonic() + STOP_SECONDS
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.01)
            if not _alive(pid):
                break
        else:
            raise HostError(f"dnsmasq {pid} of node {node} survives SIGKILL; see `ps -o stat,cmd -p {pid}`")
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
        status = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return status != "Z"
