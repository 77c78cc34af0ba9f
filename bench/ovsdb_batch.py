"""Benchmark: one OVSDB transaction for a bridge and N ports (labkit) against one `ovs-vsctl` per port.

Run as root with OVS up (invoke host.bootstrap):  .venv/bin/python bench/ovsdb_batch.py [N]
Prints both times and their ratio; both runs are in this process, on this machine, back to back.
"""

from __future__ import annotations

import subprocess
import sys
import time

from labkit.host.ovs import Ovs
from labkit.model import OvsBridge, OvsInterface, OvsPort

LAB = "lkbench"


def baseline(bridge: str, count: int) -> float:
    start = time.perf_counter()
    subprocess.run(["ovs-vsctl", "add-br", bridge, "--", "set", "Bridge", bridge, "datapath_type=netdev"], check=True)
    for i in range(count):  # ports without devices: vswitchd complains, the database work is the same
        name = f"{bridge[-1]}bench{i}"
        subprocess.run(["ovs-vsctl", "add-port", bridge, name, "--", "set", "Port", name, f"tag={i % 4000 + 1}"],
                       check=True, capture_output=True)
    return time.perf_counter() - start


def batched(ovs: Ovs, bridge: str, count: int) -> float:
    ports = tuple(OvsPort(f"{bridge[-1]}bench{i}", (OvsInterface(f"{bridge[-1]}bench{i}"),), tag=i % 4000 + 1)
                  for i in range(count))
    start = time.perf_counter()
    ovs.converge([OvsBridge(bridge, "tor", None, "netdev", 1500, ports, bridge)], LAB)
    return time.perf_counter() - start


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 53
    with Ovs() as ovs:
        try:
            slow = baseline("lkbench-a", count)
            fast = batched(ovs, "lkbench-b", count)
        finally:
            ovs.delete_bridges(["lkbench-a", "lkbench-b"])
    print(f"{count} ports: ovs-vsctl per port {slow:.3f} s, labkit one transaction {fast:.3f} s, "
          f"ratio {slow / fast:.1f}x")


if __name__ == "__main__":
    main()
