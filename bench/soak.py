"""bench/soak N: N times (lab.up; lab.down) of the default lab, as root on a host with the services up.

Passes when every cycle succeeds, nothing on the host grows from the first cycle to the last
(OVSDB rows, libvirt domains and networks, namespaces, links, open files of libvirtd and the OVS
daemons, userspace processes, files under /run/labkit and /var/lib/labkit), and the last five
cycles take no more than 20 % longer than the first five. Prints a table; `--json` prints the
numbers. Exit status 1 when it does not pass.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
DAEMONS = ("libvirtd", "ovs-vswitchd", "ovsdb-server", "virtlogd")
SLOWDOWN = 1.20


def sh(cmd: list[str]) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def invoke(*args: str) -> float:
    started = time.monotonic()
    run = subprocess.run([PYTHON, "-m", "invoke", *args], cwd=REPO, capture_output=True, text=True)
    if run.returncode:
        raise RuntimeError(f"invoke {' '.join(args)} exited {run.returncode}: {run.stderr.strip()[-400:]}")
    return time.monotonic() - started


def _pids(name: str) -> list[int]:
    out = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "comm").read_text().strip() == name:
                    out.append(int(proc.name))
            except OSError:
                pass
    return out


def _files(root: str) -> int:
    return sum(len(dirs) + len(files) for _, dirs, files in os.walk(root)) if os.path.isdir(root) else 0


def _userspace_processes() -> int:
    count = 0
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                count += bool((proc / "cmdline").read_bytes())
            except OSError:
                pass
    return count


def snapshot() -> dict[str, int]:
    """What a leak would make grow."""
    tables = [json.loads(line) for line in sh(["ovsdb-client", "-f", "json", "dump"]).splitlines() if line.strip()]
    counts = {
        "ovsdb rows": sum(len(t.get("data", [])) for t in tables),
        "libvirt domains": len(sh(["virsh", "-c", "qemu:///system", "list", "--all", "--name"]).split()),
        "libvirt networks": len(sh(["virsh", "-c", "qemu:///system", "net-list", "--all", "--name"]).split()),
        "namespaces": len(sh(["ip", "netns", "list"]).splitlines()),
        "links": len(sh(["ip", "-o", "link"]).splitlines()),
        "processes": _userspace_processes(),
        "files /run/labkit": _files("/run/labkit"),
        "files /var/lib/labkit": _files("/var/lib/labkit"),
    }
    for daemon in DAEMONS:
        counts[f"open files {daemon}"] = _settled(lambda d=daemon: sum(len(os.listdir(f"/proc/{pid}/fd")) for pid in _pids(d)))
    return counts


def _settled(count, interval: float = 0.25, bound: float = 5.0) -> int:
    """A daemon's count once it stops changing: ovs-vswitchd closes a deleted port's descriptors
    some time after lab.down returns (labkit's OVS deletes do not wait for it), and a leak is what
    stays, not what is still being let go."""
    deadline, last = time.monotonic() + bound, count()
    while time.monotonic() < deadline:
        time.sleep(interval)
        now = count()
        if now == last:
            return now
        last = now
    return last


def soak(cycles: int, say=print) -> dict:
    invoke("lab.down")
    times, failures, after = [], [], []
    for i in range(1, cycles + 1):
        try:
            up = invoke("lab.up")
            down = invoke("lab.down")
            times.append((up, down))
            say(f"cycle {i}/{cycles}: up and verified {up:.2f} s, down {down:.2f} s")
        except RuntimeError as exc:
            failures.append(f"cycle {i}: {exc}")
            say(f"cycle {i}/{cycles}: FAILED {exc}")
            invoke("lab.down")
        after.append(snapshot())
    first, last = after[0], after[-1]
    growth = {k: last[k] - first[k] for k in first if last[k] > first[k]}
    totals = [u + d for u, d in times]
    early, late = statistics.mean(totals[:5] or [0]), statistics.mean(totals[-5:] or [0])
    return {"cycles": cycles, "failures": failures, "times": times, "first": first, "last": last, "growth": growth,
            "first_five_s": round(early, 3), "last_five_s": round(late, 3),
            "slowdown": round(late / early, 3) if early else None,
            "ok": not failures and not growth and (not early or late <= SLOWDOWN * early)}


def table(report: dict) -> str:
    lines = [f"{report['cycles']} cycles of lab.up + lab.down (default lab): "
             + ("PASS" if report["ok"] else "FAIL"),
             f"  failures: {len(report['failures'])}",
             f"  first five cycles {report['first_five_s']:.2f} s each, last five {report['last_five_s']:.2f} s "
             f"(x{report['slowdown']}, at most x{SLOWDOWN})",
             "  after the first cycle / after the last:"]
    for key, value in report["first"].items():
        mark = "  GREW" if key in report["growth"] else ""
        lines.append(f"    {key:<26} {value:>6} {report['last'][key]:>6}{mark}")
    lines += [f"  {f}" for f in report["failures"]]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cycles", type=int)
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/soak: run as root (it builds real labs)", file=sys.stderr)
        return 2
    report = soak(args.cycles, say=lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps(report, indent=1) if args.json else table(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
