"""labkit's command line: `invoke --list` shows every task, `invoke --help TASK` explains one."""

from __future__ import annotations

import functools
import importlib
import os
import sys
import time
from pathlib import Path

from invoke import Collection, Exit, Task, task
from invoke.parser import parser as invoke_parser
from invoke.parser import context as invoke_parser_context

from labkit.errors import LabkitError, TopologyError


class _OnFirstUse:
    """A module imported when a task first uses it: `invoke --list` and `--help` must not pay for
    pydantic, lxml, jinja2 and the adapters' libraries."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str):
        return getattr(importlib.import_module(self._name), attr)


pipeline, commands, render, schema, hoststate = (_OnFirstUse(f"labkit.{m}")
                                               for m in ("pipeline", "commands", "render", "schema", "hoststate"))

TOPOLOGY_HELP = "topology YAML file (default: the embedded seed node, labkit/default.yaml)"
LAB_HELP = "lab name, for a lab whose file is not at hand (its last lab.up recorded it)"
T0 = time.monotonic()


def say(message: str) -> None:
    """Progress, on stderr, with the time since the command started."""
    print(f"[{time.monotonic() - T0:6.1f}s] {message}", file=sys.stderr, flush=True)


def user_errors(fn):
    """Print a LabkitError as its one sentence and exit with its code: no traceback for user mistakes."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TopologyError as exc:  # already one located sentence per problem
            raise Exit(str(exc), code=exc.exit_code) from None
        except LabkitError as exc:
            raise Exit(f"labkit: {exc}", code=exc.exit_code) from None
        except Exit:  # a task's own exit status (lab.status unhealthy, console --cmd's status)
            raise
        except BrokenPipeError:  # the reader went away (| head): not an error of ours
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise Exit(code=141) from None
        except KeyboardInterrupt:
            raise Exit("labkit: interrupted; run the same command again to converge", code=130) from None
        except Exception as exc:  # a bug, not a user mistake: one line, the traceback on request
            if os.environ.get("LABKIT_DEBUG"):
                raise
            if type(exc).__name__ == "libvirtError":  # a libvirt call labkit did not wrap: still one sentence
                raise Exit(f"labkit: libvirt refused ({exc.get_error_message()}); the host may have changed "
                           f"under the command: run it again, or look with virsh", code=4) from None
            raise Exit(f"labkit: internal error ({type(exc).__name__}: {exc}); this is a labkit bug: "
                       f"run again with LABKIT_DEBUG=1 for the traceback and report it", code=1) from None

    return wrapper


def printable(text: str) -> str:
    """A guest's output made safe for the operator's terminal: control characters (escape sequences
    that would move the cursor, retitle the window or worse) are shown as ^X, lines and tabs kept."""
    return "".join(ch if ch in "\n\t" or ch.isprintable() else f"^{chr((ord(ch) + 64) % 128)}" if ord(ch) < 128
                   else f"\\x{ord(ch):02x}" if ord(ch) < 160 else ch for ch in text)


def need_root() -> None:
    if os.geteuid() != 0:
        raise LabkitError("this task changes the host (OVS, libvirt, namespaces) and must run as root")


def read_host():
    """Start reading the host right away, in processes of their own, while this one imports and
    parses (labkit/host/observe.py): a task that observes the host calls this first."""
    from labkit.host import observe

    return observe.start()


# --------------------------------------------------------------------------- lab


@task(help={"topology": TOPOLOGY_HELP, "profile": "lab (default: fits a laptop) or fidelity (AHV's sizes)",
            "strict": "fail instead of degrading when the host lacks KVM, memlock, VFIO or the OVS module",
            "verify": "run the whole reach/blocked matrix even when nothing changed (it runs after every change; "
                      "when nothing changed lab.up checks that every guest's agent answers)",
            "no_verify": "check nothing from inside the guests (not even that they booted)",
            "timeout": "seconds to wait for the guests to boot before verifying (default 180)",
            "timings": "print how long each phase took (stderr)",
            "json": "print the result as JSON on stdout: changes, phases and their seconds, verification",
            "max_oversubscription": "refuse the lab above this many vCPUs per core, every running guest counted "
                                    "(default 24: idle built-in guests take under 1 % of a core)"})
@user_errors
def up(c, topology=None, profile=None, strict=False, verify=False, no_verify=False, timeout=180, timings=False,
       json=False, max_oversubscription=None):
    """Build the lab (observe -> plan -> apply), then verify it from inside the guests."""
    need_root()
    reading = read_host()
    from labkit.timings import Phases

    phases = Phases()
    topology = commands.up_source(topology)  # a bare lab.up keeps what manage-ovs changed
    result = pipeline.up(topology, profile, strict=strict, say=say, phases=phases, reading=reading,
                         max_oversubscription=_ratio(max_oversubscription))
    lab = result.desired.lab
    if not result.plan.empty:
        say(f"lab {lab.name} is up: {len(lab.bridges)} OVS bridges, {len(lab.networks)} libvirt networks, "
            f"{len(lab.domains)} domains, {len(lab.namespaces)} namespaces")
        for ns in lab.namespaces:
            if ns.role == "node":
                say(f"  node {ns.node}: ip netns exec {ns.name} ip addr")
        if result.desired.deviations:
            say("deviations from AHV on this host:")
            for d in result.desired.deviations:
                say(f"  {d}")
    from labkit import users

    if made := users.ensure_admin(lab.name):
        say(f"Prism (invoke lab.serve): user admin of lab {lab.name}, its password in {made} (root's only)")
    verification, late = None, []
    if not no_verify:
        if result.plan.empty and not verify:
            with phases.phase("agents answer"):
                late = commands.agents_answer(lab)
            if late:
                say(f"{', '.join(late)} did not answer; verifying the whole lab")
        if verify or not result.plan.empty or late:
            verification = pipeline.verify_lab(lab, float(timeout), say=say, phase=phases.phase)
        else:
            say(f"lab {lab.name}: nothing changed; all {len(lab.domains)} guests answer")
    if timings:
        say(phases.table())
    if json:
        import json as json_mod

        print(json_mod.dumps({"version": 1, "lab": lab.name, "changes": [str(a) for a in result.plan.actions],
                              "phases": phases.as_list(), "seconds": round(phases.total(), 3),
                              "verify": _verify_json(verification) if verification else None}, indent=1))
    if verification is not None:
        _report(verification, as_json=json, timeout=float(timeout))


def _ratio(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise LabkitError(f"--max-oversubscription {text} is not a positive number of vCPUs per core, e.g. 8")
    return value


def _verify_json(v) -> dict:
    return {"version": 1, "lab": v.lab.name, "ok": not v.failed and not v.dhcp_failed and not v.late, "late": v.late,
            "checks": [{"from": o.probe.source.label, "to": o.probe.target, "address": o.probe.address,
                        "expect": "reach" if o.probe.expect else "blocked", "reached": o.reached, "checked": o.ran,
                        "ok": o.ok} for o in v.outcomes],
            "dhcp": [{"from": o.check.source.label, "dev": o.check.dev, "check": o.check.kind, "expect": str(o.check),
                      "checked": o.ran, "ok": o.ok, "detail": o.detail} for o in v.dhcp]}


def _report(v, as_json: bool, timeout: float) -> None:
    """The matrix (unless JSON went to stdout), then one sentence per failure; exit 4 when a VM
    never came up, 1 when a check failed."""
    from labkit import verify as verify_mod
    from labkit.errors import HostError

    if not as_json:
        print(verify_mod.matrix(v.outcomes))
        for o in v.dhcp:
            print(f"DHCP {'ok  ' if o.ok else 'n/a ' if not o.ran else 'FAIL'} {o.check}"
                  + (f": {o.detail}" if o.detail and not o.ok else ""))
    if v.late:
        logs = ", ".join(v.lab.domain(n).serial_log for n in v.late)
        others = len([o for o in v.outcomes if o.probe.source.name not in v.late])
        passed = others - len([o for o in v.failed if o.probe.source.name not in v.late])
        raise HostError(f"VM {', '.join(v.late)} did not come up within {timeout:.0f} s (its agent never answered); "
                        f"see {logs}, or raise --timeout; the other guests passed {passed} of {others} checks")
    if v.failed or v.dhcp_failed:
        raise LabkitError(f"lab {v.lab.name} fails verification: "
                          + "; ".join([verify_mod.describe_failure(o) for o in v.failed]
                                      + [f"DHCP: {o.check}: {o.detail}" for o in v.dhcp_failed]))
    dhcp = f" and {len(v.dhcp)} DHCP checks" if v.dhcp else ""
    say(f"lab {v.lab.name} verified: {len(v.outcomes)} network checks{dhcp} passed from inside the guests")


@task(help={"topology": TOPOLOGY_HELP, "lab": LAB_HELP, "json": "print the results as JSON",
            "timeout": "seconds to wait for the guests to boot (default 180)"})
@user_errors
def verify(c, topology=None, lab=None, json=False, timeout=180):
    """Wait for the guests, then check the lab's network from inside them: a reach/blocked matrix."""
    need_root()
    reading = read_host()
    import json as json_mod

    path, _ = commands.target(topology, lab)
    verification = commands.verify(path, float(timeout), say=say, reading=reading)
    if json:
        print(json_mod.dumps(_verify_json(verification), indent=1))
    _report(verification, as_json=json, timeout=float(timeout))


@task(help={"vm": "VM name (as in the topology, or its domain name, or `cvm`)", "topology": TOPOLOGY_HELP,
            "lab": LAB_HELP, "cmd": "run this one command through the guest agent and print its output"})
@user_errors
def console(c, vm, topology=None, lab=None, cmd=None):
    """An interactive serial console on a VM (Ctrl-] leaves), or --cmd to run one command in it."""
    need_root()
    reading = read_host()
    path, _ = commands.target(topology, lab)
    dom = commands.find_domain(path, vm, reading)
    from labkit.host.agent import Agent, AgentError

    if cmd is None:
        from labkit.features.console import attach
        from labkit.host.virt import Virt

        with Virt() as virt:
            attach(virt.conn, dom.name)
        return
    with Agent(dom.name, dom.agent_socket) as agent:
        try:
            result = agent.run(cmd, timeout=60)
        except AgentError as exc:
            raise LabkitError(f"{exc}; is the VM booted? (lab.verify waits for it)") from None
    output = printable(result.output)
    sys.stdout.write(output if output.endswith("\n") or not output else output + "\n")
    if result.status:
        raise Exit(code=result.status)


@task(help={"topology": "topology file (only its lab name is used)", "lab": LAB_HELP,
            "timings": "print how long each phase took (stderr)"})
@user_errors
def down(c, topology=None, lab=None, timings=False):
    """Remove every object of the lab, found by its marks (no topology file needed), and nothing else."""
    need_root()
    reading = read_host()
    from labkit.timings import Phases

    phases = Phases()
    name = commands.lab_name(topology, lab)
    pipeline.down(name, say=say, phases=phases, reading=reading)
    say(f"lab {name} is down")
    if timings:
        say(phases.table())


@task(help={"topology": TOPOLOGY_HELP, "lab": LAB_HELP, "json": "print the stable JSON form (see README)"})
@user_errors
def status(c, topology=None, lab=None, json=False):
    """Per object of the lab: wanted, present, healthy; the deviations; the node namespaces."""
    need_root()
    reading = read_host()
    path, _ = commands.target(topology, lab)
    report = commands.status(path, reading=reading)
    print(report.to_json() if json else report.table())
    if not report.healthy:
        raise Exit(code=1)


@task(help={"topology": TOPOLOGY_HELP, "lab": LAB_HELP, "format": "svg (default), png or dot (graphviz source)",
            "out": "write here (default: <lab>.<format> in this directory)"})
@user_errors
def diagram(c, topology=None, lab=None, format="svg", out=None):
    """Draw the lab: nodes, bridges, bonds, uplinks, switches, VLANs, VMs, with the names used on
    the host and the links that are down now (red, dashed)."""
    need_root()
    reading = read_host()
    if format not in ("svg", "png", "dot"):
        raise LabkitError(f"--format {format} is not one of svg, png, dot")
    path, name = commands.target(topology, lab)
    source = commands.diagram(path, reading)
    target = Path(out or f"{name}.{format}")
    if format == "dot":
        target.write_text(source)
    else:
        import shutil
        import subprocess

        if shutil.which("dot") is None:
            raise LabkitError("graphviz's dot is not installed; run invoke host.bootstrap (or use --format dot)")
        run = subprocess.run(["dot", f"-T{format}", "-o", str(target)], input=source, text=True, capture_output=True)
        if run.returncode:
            raise LabkitError(f"dot failed ({run.stderr.strip()[:200]}); try --format dot and report it")
    say(f"lab {name} drawn in {target}")


@task(name="list", help={"json": "print {\"version\": 1, \"labs\": [...]} instead of the table"})
@user_errors
def list_(c, json=False):
    """Every lab on this host: its state (up, partial, left over), nodes, VMs, and the names it uses."""
    need_root()
    reading = read_host()
    from labkit import labs

    found = commands.labs_on_host(reading)
    print(labs.to_json(found) if json else labs.table(found))


@task(help={"topology": "topology file (only its lab name is used)", "lab": LAB_HELP,
            "out": "write the topology to this file instead of printing it"})
@user_errors
def export(c, topology=None, lab=None, out=None):
    """Write the running lab out as a topology file that lab.up --topology brings up again.

    What acli and manage-ovs changed is in it, with every NIC's MAC and IPAM address."""
    name = commands.lab_name(topology, lab)
    text = commands.export(name).replace("effective topology, written by labkit (lab.up, acli, manage-ovs)",
                                          "exported by labkit lab.export; invoke lab.up --topology THIS_FILE", 1)
    if out:
        Path(out).write_text(text)
        say(f"lab {name} written to {out}")
    else:
        sys.stdout.write(text)


@task(help={"topology": TOPOLOGY_HELP, "profile": "lab (default: fits a laptop) or fidelity (AHV's sizes)",
            "out": "write one <name>.xml per network and domain into this directory instead of printing"})
@user_errors
def render_(c, topology=None, profile=None, out=None):
    """Print the lab's libvirt XML, AHV-faithful (locked memory, passthrough, KVM), schema-checked."""
    topo = pipeline.load(topology, profile)
    desired = pipeline.desire(topo, hoststate.HostState(), render.Adaptation.ahv())
    for name, xml in desired.docs.items():
        problems = schema.problems(xml)
        if problems:
            raise LabkitError(f"rendered {name} fails libvirt's schema ({problems[0]}); this is a labkit bug, please report it")
    if out:
        target = Path(out)
        target.mkdir(parents=True, exist_ok=True)
        for name, xml in desired.docs.items():
            (target / f"{name}.xml").write_text(xml)
        say(f"wrote {len(desired.docs)} documents to {target}/")
        return
    for name, xml in desired.docs.items():
        print(f"<!-- {name} -->")
        print(xml, end="")


@task(help={"topology": TOPOLOGY_HELP, "profile": "lab or fidelity (overrides the file's)",
            "offline": "plan against an empty host, without looking at this one"})
@user_errors
def plan_(c, topology=None, profile=None, offline=False):
    """Show what `lab.up` would change on this host, without changing anything."""
    if offline:
        topo = pipeline.load(topology, profile)
        host = hoststate.HostState()
        print(pipeline.plan_up(pipeline.desire(topo, host, render.Adaptation()), host))
        return
    need_root()
    reading = read_host()
    topology, _ = commands.target(topology, None)
    pending, capacity = commands.status_plan(topology, profile, reading)
    print(pending)
    print(capacity)


# --------------------------------------------------------------------------- faults and manage_ovs


LINK_HELP = {"node": "node name as in the topology, or `tor` for any top-of-rack port by its name",
             "iface": "the node's uplink (eth2); with node `tor` (or `tor-b`, a pair's second switch) a switch "
                      "port name, or `all`: the whole switch fails",
             "side": "node (default): the node's NIC goes down; tor: the switch port facing it",
             "topology": TOPOLOGY_HELP, "lab": LAB_HELP}


@task(help={"where": "what to listen on: NODE/eth2 (an uplink), NODE/br0-up (a bond), NODE/br0 (the host port), "
                     "VM or VM/N (its N-th NIC from 0; cvm/1 is the CVM's eth1), tor/PORT (the switch's side)",
            "vlan": "only frames tagged with this VLAN (on an uplink, a bond or a switch port)",
            "filter": "a tcpdump (BPF) filter, e.g. 'arp or port 67'",
            "w": "write pcap to this file instead of printing; - writes it to stdout (| wireshark -k -i -)",
            "count": "stop after this many packets", "seconds": "stop after this many seconds",
            "topology": "topology file (only its lab name is used)", "lab": LAB_HELP})
@user_errors
def capture(c, where, vlan=None, filter=None, w=None, count=None, seconds=None, topology=None, lab=None):
    """Watch a lab's traffic anywhere in it (tcpdump on the interfaces that are there: nothing is added).

    Decoded lines, live (with MACs and VLAN tags), until Ctrl-C, --count or --seconds; -w FILE keeps pcap."""
    need_root()
    from labkit import capture as capture_mod
    from labkit import where as places
    from labkit.features import capture as run_capture

    request = capture_mod.Request(where, _int_option("--vlan", vlan), filter, w, _int_option("--count", count),
                                  _float_option("--seconds", seconds))
    path, _ = commands.target(topology, lab)
    lab_, host = pipeline.resolved_on(path, read_host())
    taps = {d.name: d.ifnames for d in host.domains if d.active}
    tap = places.locate(lab_, where, taps)
    capture_mod.check(request, tap)
    status = run_capture.run(request, tap, say=say)
    if status:
        raise Exit(code=status)


PLACE_HELP = ("NODE/eth2 (an uplink, what the node sends), tor/PORT (what the switch sends), NODE/br0-up "
              "(each member of a bond), NODE/br0 (the host port), VM or VM/N (what the VM receives)")


@task(positional=["link"], help={
    "link": PLACE_HELP + "; `list`: the lab's impaired links; `all --clear`: clear them all",
    "delay": "added delay, e.g. 50ms", "jitter": "delay varies by up to this, e.g. 10ms",
    "loss": "frames lost, e.g. 2%", "rate": "rate limit, e.g. 100mbit", "duplicate": "frames sent twice, e.g. 1%",
    "corrupt": "frames with a flipped bit, e.g. 0.1%", "clear": "make the link good again",
    "topology": "topology file (only its lab name is used)", "lab": LAB_HELP})
@user_errors
def impair(c, link, delay=None, jitter=None, loss=None, rate=None, duplicate=None, corrupt=None, clear=False,
           topology=None, lab=None):
    """Make a lab link bad rather than dead: delay, jitter, loss, a rate limit, duplicates, corruption.

    tc netem (tbf for a rate alone) on what the named side sends; `lab.impair list` shows the lab's,
    --clear undoes one, `lab.impair all --clear` all of them."""
    need_root()
    from labkit import impair as impair_mod
    from labkit import impairing

    path, name = commands.target(topology, lab)
    if link == "list":
        found = impairing.listed(path, read_host())
        print("\n".join(f"{place:<24} {ifname:<16} {imp}" for place, ifname, imp in found) or f"lab {name}: no link is impaired")
        return
    if link == "all":
        if not clear:
            raise LabkitError("`all` is for --clear (lab.impair all --clear); impair links one by one")
        for place, _, _ in impairing.listed(path, read_host()):
            impairing.impair(path, place, None)
            say(f"{place}: cleared")
        return
    impairment = None if clear else impair_mod.parse(delay, jitter, loss, rate, duplicate, corrupt)
    tap = impairing.impair(path, link, impairment, read_host())
    say(f"{tap.label} ({', '.join(tap.ifnames)}): " + ("cleared" if impairment is None else str(impairment)))


@task(help={"link": PLACE_HELP, "period": "one down-and-up cycle, e.g. 2s (default)",
            "count": "cycles (default: until Ctrl-C)", "topology": "topology file (only its lab name is used)",
            "lab": LAB_HELP})
@user_errors
def flap(c, link, period="2s", count=None, topology=None, lab=None):
    """Take a link down and up again and again (a flapping bond member, a bad cable); it is left up."""
    need_root()
    from labkit import impair as impair_mod
    from labkit import impairing

    seconds = impair_mod.parse(delay=period).delay_us / 1e6 if period else 2.0
    if seconds < 0.2:
        raise LabkitError(f"--period {period} is too short for a link to settle; give at least 200ms")
    path, _ = commands.target(topology, lab)
    try:
        impairing.flap(path, link, seconds, _int_option("--count", count), say=say)
    except KeyboardInterrupt:
        say(f"{link} is up")


def _number_option(name: str, value, kind=int, what: str = "a whole number"):
    """An option's value as a number (None: not given), or one sentence saying what it must be."""
    if value is None:
        return None
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise LabkitError(f"{name} {value!r} is not {what}") from None


def _int_option(name: str, value) -> int | None:
    return _number_option(name, value)


def _float_option(name: str, value) -> float | None:
    return _number_option(name, value, float, "a number of seconds")


@task(help=LINK_HELP | {"flap": "instead: take the link down and up this many times",
                        "interval": "seconds between changes while flapping (default 2)"})
@user_errors
def link_down(c, node, iface, side="node", topology=None, lab=None, flap=0, interval=2.0):
    """Take a lab link down (a bond member fails over), or flap it with --flap N."""
    need_root()
    path, _ = commands.target(topology, lab)
    flap = int(flap)
    for round_ in range(flap or 1):
        name = commands.set_link(path, node, iface, False, side)
        say(f"{name} is down" + (f" (flap {round_ + 1}/{flap})" if flap else ""))
        if flap:
            time.sleep(float(interval))
            commands.set_link(path, node, iface, True, side)
            say(f"{name} is up")
            time.sleep(float(interval))


@task(help=LINK_HELP)
@user_errors
def link_up(c, node, iface, side="node", topology=None, lab=None):
    """Bring a lab link back up (lab.up does too)."""
    need_root()
    path, _ = commands.target(topology, lab)
    say(f"{commands.set_link(path, node, iface, True, side)} is up")


class AhvFlagsTask(Task):
    """Invoke spells flags with dashes (--bridge-name); this task also takes AHV's spelling
    (--bridge_name), as manage_ovs users type it."""

    def arg_opts(self, name, default, taken_names):
        opts = super().arg_opts(name, default, taken_names)
        if "_" in name:
            opts["names"].append(name)
            _AHV_FLAGS.add(name)
        return opts


_AHV_FLAGS: set[str] = set()
_dashed_flag = invoke_parser_context.to_flag
invoke_parser_context.to_flag = lambda name: f"--{name}" if name in _AHV_FLAGS else _dashed_flag(name)


@task(klass=AhvFlagsTask, positional=["action"], help={
    "action": "show_uplinks, show_interfaces or update_uplinks",
    "node": "the node whose OVS to change (default: the first)", "lab": LAB_HELP, "topology": TOPOLOGY_HELP,
    "bridge_name": "bridge (default br0)", "bond_name": "bond (default: the bridge's, or <bridge>-up for a new one)",
    "interfaces": "10g, 1g, or a list such as eth2,eth3",
    "bond_mode": "active-backup (the default when omitted, as on AHV), balance-slb or balance-tcp (LACP)",
    "lacp_mode": "fast or slow (balance-tcp)", "lacp_fallback": "true or false (balance-tcp)",
    "mtu": "bridge MTU, carried to uplinks and guests", "require_link": "accepted for compatibility; ignored"})
@user_errors
def manage_ovs(c, action, node=None, lab=None, topology=None, bridge_name="br0", bond_name=None, interfaces=None,
               bond_mode=None, lacp_mode=None, lacp_fallback=None, mtu=None, require_link=None):
    """AHV's manage_ovs on a running lab: show_uplinks, show_interfaces, update_uplinks (through plan/apply)."""
    from labkit.manage_ovs import UplinkRequest

    need_root()
    path, _ = commands.target(topology, lab)
    if action in ("show_uplinks", "show_interfaces"):
        print(commands.manage_ovs_show(path, node, action))
        return
    if action != "update_uplinks":
        raise LabkitError(f"unknown action {action!r}; use show_uplinks, show_interfaces or update_uplinks")
    request = UplinkRequest(bridge_name, bond_name, interfaces or "", bond_mode, lacp_mode, lacp_fallback,
                            int(mtu) if mtu else None)
    result = commands.manage_ovs_update(path, node, request, say=say)
    say(f"update_uplinks done: {len(result.plan.actions)} change(s) on lab {result.desired.lab.name}")


# --------------------------------------------------------------------------- acli


@task(help={"lab": LAB_HELP, "cmd": "run this one command line and exit (1 if it failed), e.g. -c 'net.list'",
            "output": "json: print {\"data\", \"error\", \"status\"} (with --cmd)",
            "yes": "do not ask before deleting (acli's -y)"})
@user_errors
def acli(c, lab=None, cmd=None, output=None, yes=False):
    """AHV's acli on a running lab: net.*, vm.*, host.list (a shell, or one command with --cmd).

    The shell has the <acropolis> prompt, history and Tab completion; `help` lists the commands.
    Every change goes through lab.up's pipeline and lasts: lab.status, lab.up and lab.export see it."""
    need_root()
    from labkit import acli_shell

    if output not in (None, "json"):
        raise LabkitError(f"-o {output} is not an output format; use -o json or leave it out")
    session = acli_shell.LiveSession(commands.lab_name(None, lab))
    if cmd is None:
        acli_shell.interactive(session, yes=yes)
        return
    status = acli_shell.run_one(session, cmd, as_json=output == "json", yes=yes)
    if status:
        raise Exit(code=status)


# --------------------------------------------------------------------------- Prism


class OptionalPositionalTask(Task):
    """A task whose positional argument may be left out (`lab.break --list`): invoke requires every
    positional argument; this one's is marked and given "" when absent (see _complete_context)."""

    def get_arguments(self, *args, **kwargs):
        arguments = super().get_arguments(*args, **kwargs)
        for argument in arguments:
            argument.optional_positional = argument.positional
        return arguments


_complete_context = invoke_parser.ParseMachine.complete_context


def _complete_with_optional_positionals(self) -> None:
    for argument in (self.context.positional_args if self.context else ()):
        if getattr(argument, "optional_positional", False) and argument.value is None:
            argument.value = ""
    _complete_context(self)


invoke_parser.ParseMachine.complete_context = _complete_with_optional_positionals


@task(klass=OptionalPositionalTask, positional=["scenario"], help={
    "scenario": "the scenario to apply (`--list` names them)", "list": "list the scenarios, one a line, name first",
    "answers": "for the trainer: what each scenario applied to the lab broke, and the commands that fix it",
    "seed": "pick the same objects again (default: a random pick, printed)", "lab": LAB_HELP, "topology": TOPOLOGY_HELP})
@user_errors
def break_(c, scenario=None, list=False, answers=False, seed=None, topology=None, lab=None):
    """Break a running lab on purpose, a known way (a training exercise); lab.check says what is broken, lab.up repairs."""
    from labkit import breaking

    if list:
        for s in breaking.catalogue().values():
            print(f"{s.name:<22} {s.summary}")
        return
    need_root()
    path, name = commands.target(topology, lab)
    if answers:
        applied = commands.faults(name)
        if not applied:
            print(f"lab {name}: no scenario applied since its last lab.up")
        for fault in applied:
            s = breaking.scenario(fault.scenario)
            print(f"{s.name} (seed {fault.seed}): {s.summary}\n" + "\n".join(f"  {line}" for line in fault.answer(s).splitlines())
                  + "\n  fix:\n" + "\n".join(f"    {line}" for line in fault.fix(s)))
        return
    if not scenario:
        raise LabkitError("name a scenario (`invoke lab.break --list` lists them), or give --list or --answers")
    seed = _int_option("--seed", seed) if seed is not None else int.from_bytes(os.urandom(2), "big")
    commands.break_lab(path, name, scenario, seed, say=say)
    say(f"lab {name}: scenario {scenario} applied (seed {seed}); `invoke lab.check --lab {name}` shows what is broken, "
        f"`invoke lab.break --answers --lab {name}` the fix, `invoke lab.up` repairs it")


@task(help={"topology": TOPOLOGY_HELP, "lab": LAB_HELP, "timeout": "seconds to wait for the guests to boot (default 180)"})
@user_errors
def check(c, topology=None, lab=None, timeout=180):
    """For a trainee: what is still broken in the lab, in one table, without how to fix it; exits 1 while anything is."""
    need_root()
    reading = read_host()
    path, _ = commands.target(topology, lab)
    text, fine = commands.check(path, float(timeout), say=lambda _line: None, reading=reading)
    print(text)
    if not fine:
        raise Exit(code=1)


@task(klass=OptionalPositionalTask, positional=["name"], help={
    "name": "the save's name (letters, digits, . _ -)", "list": "list the lab's saves, with the disk each takes",
    "delete": "delete this save", "lab": LAB_HELP, "topology": "topology file (only its lab name is used)"})
@user_errors
def save_(c, name=None, list=False, delete=None, topology=None, lab=None):
    """Save the running lab, guests and all (memory, disks, design, leases), to restore it in seconds."""
    need_root()
    from labkit import saves
    from labkit.features import saving

    lab_name = commands.lab_name(topology, lab)
    if list:
        found = saving.listed(lab_name)
        print("\n".join(m.line() for m in found) + f"\n{len(found)} save(s) of lab {lab_name}, {saving.total(lab_name)} "
              f"in {saves.directory(lab_name)}" if found else f"lab {lab_name} has no saves")
        return
    if delete:
        saving.delete(lab_name, saves.checked_name(delete))
        say(f"save {delete} of lab {lab_name} deleted")
        return
    if not name:
        raise LabkitError("name the save (invoke lab.save NAME), or give --list or --delete NAME")
    manifest = saving.save(lab_name, saves.checked_name(name), say=say)
    say(f"lab {lab_name} saved as {name}: {len(manifest.domains)} guest(s), {len(manifest.files)} disk file(s), "
        f"{saves.size_text(manifest.size)} in {saves.directory(lab_name, name)}; `invoke lab.restore {name} --lab {lab_name}` "
        f"goes back to it")


@task(help={"name": "the save to go back to (`invoke lab.save --list` lists them)", "lab": LAB_HELP,
            "topology": "topology file (only its lab name is used)", "timings": "print how long each phase took"})
@user_errors
def restore(c, name, topology=None, lab=None, timings=False):
    """Put the lab back as it was saved: its design, host objects, and every guest running on from that moment."""
    need_root()
    from labkit import saves
    from labkit.features import saving
    from labkit.timings import Phases

    lab_name = commands.lab_name(topology, lab)
    phases = Phases()
    saved = saving.restore(lab_name, saves.checked_name(name), say=say, phases=phases)
    say(f"lab {lab_name} is back at save {name} ({saved.created}): {len(saved.domains)} guest(s) running on from then")
    if timings:
        say(phases.table())


@task(help={"port": "TCP port (default 9440, Prism's)", "bind": "address to listen on (default 127.0.0.1: this host only)",
            "insecure_http": "plain HTTP instead of HTTPS (for tests and local scripts)"})
@user_errors
def serve(c, port=9440, bind="127.0.0.1", insecure_http=False):
    """Prism for every lab on this host: REST API v4 (the official SDKs), v3 and v2.0, and a web page.

    In the foreground; Ctrl-C stops it. HTTPS with a self-signed certificate labkit makes once
    (/var/lib/labkit/prism/); each lab is a cluster, its users log in as NAME (or NAME@LAB)."""
    need_root()
    from labkit.api import serve as serve_mod

    try:
        serve_mod.serve(bind, int(port), insecure_http, say=say)
    except KeyboardInterrupt:
        say("stopped")


@task(help={"lab": LAB_HELP, "role": "admin (every change) or viewer (reads only), with add",
            "action": "list (default), add NAME, remove NAME, key NAME (a new X-ntnx-api-key)"},
      positional=["action", "name"])
@user_errors
def users(c, action=None, name=None, lab=None, role="viewer"):
    """A lab's Prism users: list, add NAME --role admin|viewer, remove NAME, key NAME.

    add reads the password from the terminal (twice), or from standard input when that is not a
    terminal: echo PW | invoke lab.users --lab L add NAME --role viewer."""
    need_root()
    from labkit import state, users as users_mod

    name_of_lab = commands.lab_name(None, lab)
    if state.read_effective(name_of_lab) is None:
        raise LabkitError(f"lab {name_of_lab} is not up; bring it up first (invoke lab.up)")
    if action in (None, "list"):  # a positional with a default would never be filled (invoke fills empty ones)
        for user in users_mod.listed(name_of_lab):
            print(f"{user.name:<24} {user.role:<7} {'api key' if user.key_hash else ''}".rstrip())
        return
    if name is None:
        raise LabkitError(f"lab.users {action} needs a user name: invoke lab.users --lab {name_of_lab} {action} NAME")
    if action == "add":
        users_mod.add(name_of_lab, users_mod.check_name(name), _password(), role)
        say(f"user {name} ({role}) added to lab {name_of_lab}")
    elif action == "remove":
        users_mod.remove(name_of_lab, name)
        say(f"user {name} removed from lab {name_of_lab}")
    elif action == "key":
        print(users_mod.new_key(name_of_lab, name))
        say(f"a new API key for {name} (X-ntnx-api-key); the old one no longer works")
    else:
        raise LabkitError(f"{action!r} is not an action of lab.users; use list, add, remove or key")


def _password() -> str:
    import getpass

    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise LabkitError("the two passwords differ; nothing was changed")
    return first


# --------------------------------------------------------------------------- host and images


@task
@user_errors
def bootstrap(c):
    """Install packages, start OVS and libvirt, build the guest image, probe KVM (idempotent).

    Installs what a fresh Debian 12 needs (apt), starts ovsdb-server, ovs-vswitchd, virtlogd and
    libvirtd when they are not running (there is no systemd), builds the guest image, probes KVM."""
    need_root()
    from labkit import images
    from labkit.features import preflight, services

    services.install_packages(services.missing_packages(), say=say)
    kvm_changed = services.kvm_device_as_udev_sets_it()
    if kvm_changed:
        say(kvm_changed)
    started = services.start_services(say=say)
    images.build(say=say)
    kvm = preflight.check_kvm()
    say(f"services {'started: ' + ', '.join(started) if started else 'already running'}; KVM: {kvm.detail}")


@task(help={"topology": TOPOLOGY_HELP, "strict": "exit non-zero on degraded checks too"})
@user_errors
def preflight(c, topology=None, strict=False):
    """Check this host for a lab: KVM (a real probe), memlock, VFIO, OVS datapath, services, names, capacity."""
    from labkit import model
    from labkit.features import preflight as checks

    from labkit.host.observe import observe

    topo = pipeline.load(topology)
    facts = hoststate.HostState()
    if checks.check_services().status == checks.PASS:
        facts = observe(topo.name)
    report = checks.run(model.resolve(topo, facts.facts_for(topo.name)), libvirt_cache=True,
                        running=facts.running(topo.name), others=facts.other_guests(topo.name))
    print(report.table())
    checks.enforce(report, strict)


@task(help={"force": "rebuild even when the inputs are unchanged"})
@user_errors
def build(c, force=False):
    """Build the guest image (labkit's kernel from linux-source + busybox-static initramfs) into /var/lib/labkit/images."""
    need_root()
    from labkit import images

    images.build(say=say, force=force)


# --------------------------------------------------------------------------- tests


@task(help={"pytest_args": "extra arguments for pytest, e.g. '-k plan -x'"})
def test(c, pytest_args=""):
    """Run the whole test suite: unit tests, then integration tests on real OVS, libvirt and TCG guests."""
    if os.geteuid() == 0:
        bootstrap(c)
    result = c.run(f"{sys.executable} -m pytest -ra {pytest_args}", warn=True, pty=False)
    if result.exited == 5:  # pytest: nothing collected - a suite that ran nothing has not passed
        raise Exit("labkit: pytest collected no tests; check the selection given with --pytest-args", code=1)
    if result.exited:
        raise Exit(code=result.exited)


lab = Collection("lab")
for t, name in ((up, "up"), (down, "down"), (status, "status"), (verify, "verify"), (console, "console"),
                (render_, "render"), (plan_, "plan"), (link_down, "link-down"), (link_up, "link-up"), (export, "export"), (list_, "list"), (diagram, "diagram"),
                (serve, "serve"), (users, "users"), (capture, "capture"), (impair, "impair"), (flap, "flap"),
                (break_, "break"), (check, "check"), (save_, "save"), (restore, "restore")):
    lab.add_task(t, name)
host = Collection("host")
host.add_task(bootstrap, "bootstrap")
host.add_task(preflight, "preflight")
images_ = Collection("images")
images_.add_task(build, "build")

ns = Collection(lab, host, images_, test, acli)
ns.add_task(manage_ovs, "manage-ovs")
