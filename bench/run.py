"""bench/run: labkit against the same work done by hand (bench/baseline.py), in one run, on this host.

Three labs: the default one (the seed's node, 2 domains), bench/topologies/cluster-3x10.yaml
(3 nodes, 33 domains) and bench/topologies/cluster-4x24.yaml (4 nodes with LACP bonds, 100
domains on three VLANs). For each: lab.up until verified, a no-op lab.up, lab.verify, lab.down, the
baseline's up (until every guest's boot marker) and down; peak RSS (every QEMU plus labkit), idle
CPU and RSS per guest, OVSDB transactions and libvirt calls; for the default lab also a guest's
boot to its agent's hello, lab.capture's start, lab.save and lab.restore (as a trainer resets a
lab: restored while it runs) and the disk a save takes, the same for examples/three-nodes.yaml,
and `invoke --list`. Prints the numbers and the ratios, writes
docs/benchmarks.md and docs/lab-up-phases.svg. Run as root on a host with the services up
(`invoke host.bootstrap`); not part of the test suite. `--quick`: the default lab only.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from baseline import Baseline  # noqa: E402

from labkit import model, pipeline  # noqa: E402
from labkit.features import preflight  # noqa: E402
from labkit.host import observe  # noqa: E402
from labkit.host.agent import Agent  # noqa: E402

PYTHON = sys.executable
CLUSTER = str(REPO / "bench/topologies/cluster-3x10.yaml")
HUNDRED = str(REPO / "bench/topologies/cluster-4x24.yaml")
TARGETS = {  # issue 9's targets: (metric, bound, how it is compared)
    "default: up and verified / baseline up": 1.25,
    "default: lab.verify (s)": 1.0,
    "default: no-op lab.up (s)": 0.5,
    "invoke --list (s)": 0.25,
    "default: lab.down (s)": 1.0,
    "cluster: lab.down (s)": 5.0,
    "cluster: lab.verify (s)": 3.0,
    "guest boot to agent hello (s)": 1.5,
    "idle guest CPU (% of a core)": 1.0,
    "idle guest RSS (MB)": 120,
    "default: peak RSS, QEMUs + labkit (MB)": 1024,
    "cluster: peak RSS, QEMUs + labkit (MB)": 4096,
    "cluster: up and verified / baseline up": 1.2,
    "cluster: labkit CPU per VM (s)": 0.4,
    # issue 17: the 100-guest lab comes up and verifies in one lab.up, in the time its guests take
    "hundred: up and verified / baseline up": 1.2,
    "hundred: peak RSS, QEMUs + labkit (MB)": 12288,
    # issue 18: Prism's API on the 3-node lab (bench/api.py)
    "api: list VMs p50, 50 clients (ms)": 5.0,
    "api: list VMs p99, 50 clients (ms)": 25.0,
    "api: server peak RSS (MB)": 100,
    "api: SDK create-to-lease / acli's": 1.5,
    # issue 20: a lab goes back to a save in seconds
    "default: lab.restore / up and verified": 2.0,
    "three-node: lab.restore (s)": 10.0,
}
THREE_NODES = str(REPO / "examples/three-nodes.yaml")


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- measuring


def qemu_pids() -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "comm").read_text().startswith("qemu-system"):
                    pids.append(int(proc.name))
            except OSError:
                pass
    return pids


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def descendants(pid: int) -> list[int]:
    children = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                ppid = int(next(l.split()[1] for l in (proc / "status").read_text().splitlines() if l.startswith("PPid:")))
                children.setdefault(ppid, []).append(int(proc.name))
            except (OSError, StopIteration):
                pass
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo += children.get(current, [])
    return out


class PeakRss:
    """Samples the RSS of every QEMU plus the process tree of `root` (labkit) every 50 ms."""

    def __init__(self):
        self.peak, self.root, self._stop = 0.0, None, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.05):
            pids = set(qemu_pids()) | (set(descendants(self.root)) if self.root else set())
            self.peak = max(self.peak, sum(rss_mb(p) for p in pids))

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def invoke(*args: str, stats: str | None = None, rss: PeakRss | None = None) -> tuple[float, float, str]:
    """Run `invoke ARGS`; returns (wall seconds, CPU seconds of labkit's processes, stdout)."""
    env = dict(os.environ, **({"LABKIT_STATS": stats} if stats else {}))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    proc = subprocess.Popen([PYTHON, "-m", "invoke", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    if rss:
        rss.root = proc.pid
    out, err = proc.communicate()
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise RuntimeError(f"invoke {' '.join(args)} exited {proc.returncode}: {err.strip()[-600:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), out


def cpu_speed() -> float:
    """A fixed piece of Python work, timed: how fast this host is right now (median of five)."""
    def once() -> float:
        started = time.monotonic()
        sum(range(10**7))
        return time.monotonic() - started
    return median_of(5, once)


def median_of(n: int, fn) -> float:
    return statistics.median(fn() for _ in range(n))


def idle(settle: float = 10, window: float = 10) -> tuple[float, float]:
    """(CPU % of a core, RSS MB) per running guest, idle."""
    time.sleep(settle)
    pids = qemu_pids()
    start = {p: cpu_seconds(p) for p in pids}
    time.sleep(window)
    cpu = statistics.mean(100 * (cpu_seconds(p) - start[p]) / window for p in pids)
    return cpu, statistics.mean(rss_mb(p) for p in pids)


def counted(path: str) -> Counter:
    try:
        return Counter(Path(path).read_text().splitlines())
    except FileNotFoundError:
        return Counter()


# --------------------------------------------------------------------------- one lab


def resolved(topology: str | None) -> tuple[model.Lab, object]:
    topo = pipeline.load(topology)
    lab = model.resolve(topo, observe.observe(topo.name).facts_for(topo.name))
    return lab, preflight.run(lab, probe_kvm=False).adaptation()


def lab_args(topology: str | None) -> list[str]:
    return ["--topology", topology] if topology else []


def scenario(label: str, topology: str | None, rounds: int) -> dict:
    args = lab_args(topology)
    lab_name = pipeline.load(topology).name
    invoke("lab.down", "--lab", lab_name)
    result: dict = {"label": label}
    ups, cpus, phases = [], [], None
    for i in range(rounds):
        stats = tempfile.mktemp(prefix="labkit-stats-")
        with PeakRss() as rss:
            wall, cpu, out = invoke("lab.up", "--json", *args, stats=stats, rss=rss)
        report = json.loads(out)
        if not report["verify"] or not report["verify"]["ok"]:
            raise RuntimeError(f"{label}: lab.up did not verify")
        ups.append(wall)
        cpus.append(cpu)
        if phases is None:
            phases, calls, peak = report["phases"], counted(stats), rss.peak
        os.unlink(stats) if os.path.exists(stats) else None
        say(f"{label}: up and verified in {wall:.2f} s (labkit CPU {cpu:.2f} s)")
        if i == 0:
            result["idle cpu %"], result["idle rss MB"] = idle()
            say(f"{label}: idle guest {result['idle cpu %']:.2f} % of a core, {result['idle rss MB']:.0f} MB RSS")
            result["noop s"] = median_of(5, lambda: invoke("lab.up", *args)[0])
            result["verify s"] = median_of(5 if rounds > 1 else 3, lambda: invoke("lab.verify", *args)[0])
            say(f"{label}: no-op lab.up {result['noop s']:.2f} s, lab.verify {result['verify s']:.2f} s")
            if topology is None:
                result["start s"], result["hello s"] = hello_time()
                say(f"{label}: libvirt starts a domain in {result['start s']:.2f} s, "
                    f"its guest boots to the agent's hello in {result['hello s']:.2f} s")
                result["capture start s"], result["baseline capture start s"] = capture_start()
                say(f"{label}: lab.capture listens after {result['capture start s']:.2f} s "
                    f"(tcpdump by hand: {result['baseline capture start s']:.2f} s)")
                result.update(save_restore(label, lab_name))
        down_stats = tempfile.mktemp(prefix="labkit-stats-")
        down, _, _ = invoke("lab.down", "--lab", lab_name, stats=down_stats)
        result.setdefault("down s", []).append(down)
        if i == 0:
            down_calls = counted(down_stats)
        os.unlink(down_stats) if os.path.exists(down_stats) else None
        say(f"{label}: down in {down:.2f} s")
        # the same lab by hand, right after: each round's ratio is taken from a pair run at the same
        # speed of this shared host (it drifts by a third over a day), and the median pair is reported
        hand = by_hand(label, topology)
        for key in ("baseline up s", "baseline down s"):
            result.setdefault(key, []).append(hand[key])
        result.setdefault("baseline peak rss MB", hand["baseline peak rss MB"])  # the first round's, as labkit's
        result["baseline commands"] = hand["baseline commands"]
        result.setdefault("pair ratios", []).append(wall / hand["baseline up s"])
    result.update({"up s": statistics.median(ups), "labkit cpu s": statistics.median(cpus), "phases": phases,
                   "peak rss MB": peak, "down s": statistics.median(result["down s"]),
                   "ovsdb transactions": calls["ovsdb transaction"] + down_calls["ovsdb transaction"],
                   "libvirt calls": calls["libvirt call"] + down_calls["libvirt call"],
                   "domains": len(pipeline.load(topology).vms) + len(pipeline.load(topology).nodes),
                   "baseline up s": statistics.median(result["baseline up s"]),
                   "baseline down s": statistics.median(result["baseline down s"]),
                   "up / baseline up": statistics.median(result["pair ratios"])})
    return result


def by_hand(label: str, topology: str | None) -> dict:
    """The same lab built and removed by hand (bench/baseline.py), once."""
    lab, adapt = resolved(topology)
    hand = Baseline(lab, adapt)
    out: dict = {}
    try:
        with PeakRss() as rss:
            started = time.monotonic()
            hand.up()
            out["baseline up s"] = time.monotonic() - started
    except BaseException:
        hand.down()  # what it made by hand carries no labkit mark: lab.down would not find it
        raise
    out["baseline peak rss MB"] = rss.peak
    say(f"{label}: baseline up (to every boot marker) in {out['baseline up s']:.2f} s")
    started = time.monotonic()
    hand.down()
    out["baseline down s"] = time.monotonic() - started
    out["baseline commands"] = dict(hand.commands)
    say(f"{label}: baseline down in {out['baseline down s']:.2f} s")
    return out


def save_restore(label: str, lab_name: str, samples: int = 3) -> dict:
    """lab.save of the running lab, then lab.restore of it (the lab running: the usual reset), as
    whole commands, the median of `samples`; and the disk the save takes."""
    from labkit.features import saving

    saves_s, restores_s = [], []
    for _ in range(samples):
        saves_s.append(invoke("lab.save", "bench", "--lab", lab_name)[0])
        size = saving.manifest(lab_name, "bench").size
        restores_s.append(invoke("lab.restore", "bench", "--lab", lab_name)[0])
        invoke("lab.save", "--delete", "bench", "--lab", lab_name)
    out = {"save s": statistics.median(saves_s), "restore s": statistics.median(restores_s), "save MB": size / 2**20}
    say(f"{label}: lab.save {out['save s']:.2f} s, lab.restore {out['restore s']:.2f} s, the save takes {out['save MB']:.0f} MB")
    return out


def three_node_save_restore() -> dict:
    invoke("lab.down", "--lab", "trio")
    invoke("lab.up", "--topology", THREE_NODES)
    try:
        return save_restore("three-node", "trio")
    finally:
        invoke("lab.down", "--lab", "trio")


def hello_time(samples: int = 5) -> tuple[float, float]:
    """A running lab's user VM stopped and started again: (libvirt's domain start, then the guest's
    boot until its agent answers hello), medians."""
    import libvirt

    lab, _ = resolved(None)
    dom = next(d for d in lab.domains if d.role == "uvm")
    conn = libvirt.open("qemu:///system")
    starts, boots = [], []
    try:
        handle = conn.lookupByName(dom.name)
        for _ in range(samples):
            handle.destroy()
            started = time.monotonic()
            handle.create()
            running = time.monotonic()
            with Agent(dom.name, dom.agent_socket) as agent:
                agent.wait_boot(60)
            starts.append(running - started)
            boots.append(time.monotonic() - running)
    finally:
        conn.close()
    return statistics.median(starts), statistics.median(boots)


def listening_after(argv: list[str]) -> float:
    """Seconds from starting `argv` until tcpdump says it listens (on stderr); then it is stopped."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for line in proc.stderr:
            if b"listening on" in line:
                return time.monotonic() - started
        raise RuntimeError(f"{argv[:4]} ended without listening")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


def capture_start(samples: int = 5) -> tuple[float, float]:
    """lab.capture on the default lab's first uplink until tcpdump listens, and the same tcpdump
    started by hand on that interface (the baseline): medians."""
    lab, _ = resolved(None)
    node = lab.node_names[0]
    uplink, veth = next(iter(lab.uplinks(node).items()))
    ours = median_of(samples, lambda: listening_after(
        [sys.executable, "-m", "invoke", "lab.capture", f"{node}/{uplink}", "--count", "1000000"]))
    hand = median_of(samples, lambda: listening_after(["tcpdump", "-i", veth.peer, "-n", "-e", "-l"]))
    return ours, hand


# --------------------------------------------------------------------------- report


def ratio(run: dict) -> float:
    """labkit's up over the baseline's: the median of the rounds' pairs (a report from before
    pairing: the medians' ratio)."""
    return run.get("up / baseline up", run["up s"] / run["baseline up s"])


def measurements(default: dict, cluster: dict | None, list_s: float, hundred: dict | None = None) -> dict[str, float]:
    m = {
        "default: up and verified (s)": default["up s"],
        "default: baseline up (s)": default["baseline up s"],
        "default: up and verified / baseline up": ratio(default),
        "default: no-op lab.up (s)": default["noop s"],
        "default: lab.verify (s)": default["verify s"],
        "default: lab.down (s)": default["down s"],
        "default: baseline down (s)": default["baseline down s"],
        "invoke --list (s)": list_s,
        "libvirt domain start (s)": default["start s"],
        "guest boot to agent hello (s)": default["hello s"],
        "lab.capture start to listening (s)": default["capture start s"],
        "baseline: tcpdump start to listening (s)": default["baseline capture start s"],
        "lab.capture start / tcpdump by hand": default["capture start s"] / default["baseline capture start s"],
        "default: lab.save (s)": default["save s"],
        "default: lab.restore (s)": default["restore s"],
        "default: lab.restore / up and verified": default["restore s"] / default["up s"],
        "default: disk a save takes (MB)": default["save MB"],
        "idle guest CPU (% of a core)": default["idle cpu %"],
        "idle guest RSS (MB)": default["idle rss MB"],
        "default: peak RSS, QEMUs + labkit (MB)": default["peak rss MB"],
        "default: baseline peak RSS (MB)": default["baseline peak rss MB"],
        "default: OVSDB transactions (up + down)": default["ovsdb transactions"],
        "default: libvirt calls (up + down)": default["libvirt calls"],
        "default: labkit CPU per VM (s)": default["labkit cpu s"] / default["domains"],
    }
    for prefix, run in (("cluster", cluster), ("hundred", hundred)):
        if not run:
            continue
        m.update({
            f"{prefix}: up and verified (s)": run["up s"],
            f"{prefix}: baseline up (s)": run["baseline up s"],
            f"{prefix}: up and verified / baseline up": ratio(run),
            f"{prefix}: no-op lab.up (s)": run["noop s"],
            f"{prefix}: lab.verify (s)": run["verify s"],
            f"{prefix}: lab.down (s)": run["down s"],
            f"{prefix}: baseline down (s)": run["baseline down s"],
            f"{prefix}: peak RSS, QEMUs + labkit (MB)": run["peak rss MB"],
            f"{prefix}: baseline peak RSS (MB)": run["baseline peak rss MB"],
            f"{prefix}: idle guest CPU (% of a core)": run["idle cpu %"],
            f"{prefix}: idle guest RSS (MB)": run["idle rss MB"],
            f"{prefix}: OVSDB transactions (up + down)": run["ovsdb transactions"],
            f"{prefix}: libvirt calls (up + down)": run["libvirt calls"],
            f"{prefix}: labkit CPU per VM (s)": run["labkit cpu s"] / run["domains"],
        })
    return m


def chart(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 1, figsize=(9, 1.6 + 2.2 * len(results)), squeeze=False)
    for ax, result in zip(axes[:, 0], results):
        left, colors = 0.0, plt.get_cmap("tab20").colors
        for i, item in enumerate(result["phases"]):
            ax.barh(0, item["seconds"], left=left, color=colors[i % len(colors)], edgecolor="white",
                    label=f"{item['phase']} ({item['seconds']:.2f} s)")
            left += item["seconds"]
        ax.set_yticks([])
        ax.set_xlabel("seconds")
        ax.set_title(f"lab.up, {result['label']}: where the time goes (up and verified in {result['up s']:.1f} s)")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=3, fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(path, format="svg")


def markdown(m: dict[str, float], results: list[dict], host: str) -> str:
    lines = ["# Benchmarks", "",
             "Written by `bench/run` (one run, this host; numbers vary by a few percent between runs). The baseline",
             "(`bench/baseline.py`) builds the same objects the way people do without labkit: `ip` per link,",
             "`ovs-vsctl` per port, `virsh` per network, `virt-install` per domain, then waits for every guest's",
             "boot marker on its serial console. Ratios are labkit over the baseline, measured in the same run:",
             "each round of labkit's is followed by one of the baseline's, and the ratio is the median pair's",
             "(the default lab: 3 rounds; the larger labs: 1).",
             "", f"Host: {host}", "", "| measurement | value | target | met |", "|---|---|---|---|"]
    for key, value in m.items():
        bound = TARGETS.get(key)
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        lines.append(f"| {key} | {shown} | {'<= ' + str(bound) if bound else ''} | "
                     f"{('yes' if value <= bound else '**no**') if bound else ''} |")
    lines += ["", "Baseline commands (one process each):", ""]
    for result in results:
        lines.append(f"- {result['label']}: " + ", ".join(f"{n} x {c}" for c, n in sorted(result["baseline commands"].items())))
    lines += ["", "Where `lab.up`'s time goes (`lab.up --timings` / `--json` report the same phases):", "",
              "![lab.up phases](lab-up-phases.svg)", ""]
    if any(value > TARGETS[key] for key, value in m.items() if key in TARGETS):
        lines += [(REPO / "bench/limits.md").read_text()]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the default lab only")
    parser.add_argument("--out", default=str(REPO / "docs"), help="where benchmarks.md and the chart go")
    parser.add_argument("--soak", type=int, default=0, metavar="N", help="also N cycles of bench/soak, in the report")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite benchmarks.md and the chart from the last run's benchmarks.json")
    args = parser.parse_args()
    out = Path(args.out)
    if args.report_only:
        return report(json.loads((out / "benchmarks.json").read_text()), out)
    if os.geteuid() != 0:
        say("bench/run: run as root on a host with the services up (invoke host.bootstrap)")
        return 2
    list_s = median_of(5, lambda: invoke("--list")[0])
    results = [scenario("default lab (2 domains)", None, rounds=3)]
    if not args.quick:
        results.append(scenario("3 nodes x 10 VMs (33 domains)", CLUSTER, rounds=1))
        results.append(scenario("4 nodes x 24 VMs (100 domains)", HUNDRED, rounds=1))
    m = measurements(results[0], results[1] if len(results) > 1 else None, list_s, results[2] if len(results) > 2 else None)
    trio = three_node_save_restore()
    m.update({"three-node: lab.save (s)": trio["save s"], "three-node: lab.restore (s)": trio["restore s"],
              "three-node: disk a save takes (MB)": trio["save MB"]})
    if not args.quick:
        import api

        figures = api.measure(CLUSTER, say=say)
        m.update({"api: list VMs p50, 1 client (ms)": figures["list 1 client"]["p50 ms"],
                  "api: list VMs p99, 1 client (ms)": figures["list 1 client"]["p99 ms"],
                  "api: list VMs p50, 50 clients (ms)": figures["list 50 clients"]["p50 ms"],
                  "api: list VMs p99, 50 clients (ms)": figures["list 50 clients"]["p99 ms"],
                  "api: list VMs, requests/s at 50 clients": figures["list 50 clients"]["rps"],
                  "api: server peak RSS (MB)": figures["server peak RSS MB"],
                  "api: SDK create to DHCP lease (s)": figures["sdk create to lease s"],
                  "api: acli create to DHCP lease (s)": figures["acli create to lease s"],
                  "api: SDK create-to-lease / acli's": figures["sdk create to lease s"] / figures["acli create to lease s"]})
    soaked = None
    if args.soak:
        import soak

        soaked = soak.soak(args.soak, say=say)
    host = (f"{os.cpu_count()} cores, {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') >> 30} GiB, "
            f"{os.uname().release}; speed: `sum(range(10**7))` in Python takes {cpu_speed():.2f} s (shared hosts vary: "
            f"compare runs by it)")
    for key, value in m.items():
        bound = TARGETS.get(key)
        print(f"{key:<48} {value:10.3f}" + (f"   target <= {bound}: {'met' if value <= bound else 'NOT met'}" if bound else ""))
    out.mkdir(parents=True, exist_ok=True)
    data = {"host": host, "measurements": m, "runs": results, "soak": soaked}
    (out / "benchmarks.json").write_text(json.dumps(data, indent=1) + "\n")
    return report(data, out)


def report(data: dict, out: Path) -> int:
    """docs/benchmarks.md and the chart, from one run's numbers."""
    chart(data["runs"], out / "lab-up-phases.svg")
    text = markdown(data["measurements"], data["runs"], data["host"])
    if data["soak"]:
        import soak

        text += "\n## Soak (`bench/soak`)\n\n```\n" + soak.table(data["soak"]) + "\n```\n"
    (out / "benchmarks.md").write_text(text)
    say(f"wrote {out / 'benchmarks.md'}, {out / 'lab-up-phases.svg'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
