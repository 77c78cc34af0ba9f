"""Benchmark: defining and starting a lab's domains concurrently (labkit) against one after another
(what a script calling `virsh define` + `virsh start` per VM does).

Run as root with libvirt up and the guest image built:  .venv/bin/python bench/domains_parallel.py [N]
Prints both times and their ratio; both runs are in this process, back to back.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace

from labkit import model, names, render
from labkit.host.virt import Virt

LAB = "lkbench"
LOG_DIR = f"{model.LOG_DIR}/{LAB}"


def domains(count: int, tag: str) -> list[str]:
    base = model.Domain(name="", uuid="", role="uvm", node="bench", memory_mib=96, vcpus=1, nics=(),
                        hostname="bench")
    lab = model.Lab(LAB, "lab", (), (), (), (), ())
    return [render.render_domain(replace(base, name=f"lkbench-{tag}{i}", uuid=names.uuid_for(LAB, tag, str(i)),
                                         hostname=f"bench{i}", serial_log=f"{LOG_DIR}/{tag}{i}.log"), lab, render.Adaptation(domain_type="qemu",
                                                                                      cpu_passthrough=False))
            for i in range(count)]


def virsh(*args: str) -> None:
    run = subprocess.run(["virsh", "-q", "-c", "qemu:///system", *args], capture_output=True, text=True)
    if run.returncode:
        raise SystemExit(f"virsh {' '.join(args)}: {run.stderr.strip()}")


def sequential(docs: list[str]) -> float:
    start = time.perf_counter()
    for xml in docs:
        with tempfile.NamedTemporaryFile("w", suffix=".xml") as f:
            f.write(xml)
            f.flush()
            virsh("define", f.name)
        virsh("start", xml.split("<name>")[1].split("</name>")[0])
    return time.perf_counter() - start


def concurrent(virt: Virt, docs: list[str]) -> float:
    start = time.perf_counter()
    virt.create_domains(docs, say=lambda _msg: None)
    return time.perf_counter() - start


def main() -> None:
    if os.geteuid() != 0:
        sys.exit("run as root")
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    a, b = domains(count, "a"), domains(count, "b")
    names_ = [x.split("<name>")[1].split("</name>")[0] for x in a + b]
    os.makedirs(LOG_DIR, exist_ok=True)
    with Virt() as virt:
        try:
            slow = sequential(a)
            fast = concurrent(virt, b)
        finally:
            virt.delete_domains(names_, LAB)
            shutil.rmtree(LOG_DIR, ignore_errors=True)
    print(f"{count} domains: virsh define+start one by one {slow:.2f} s, labkit concurrent {fast:.2f} s, "
          f"ratio {slow / fast:.1f}x")


if __name__ == "__main__":
    main()
