"""bench/run's Prism figures (issue 18), on the 3-node x 10-VM lab, in one run:

- listing the lab's VMs (GET /api/vmm/v4.3/ahv/config/vms, its 30 VMs), p50 and p99 with 1 and
  with 50 concurrent clients (wrk, closed loop, one thread, 10 s each, after a warm-up);
- the server's RSS at its peak under that load;
- a VM made with the official SDK (create with a NIC on a managed subnet, power on, each task
  polled to SUCCEEDED) until its node's DHCP server has leased it its address, against the same
  VM made with acli (vm.create, vm.nic_create, vm.on) until the same; medians of three each.
"""

from __future__ import annotations

import json
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _invoke(*args: str) -> str:
    run = subprocess.run([PYTHON, "-m", "invoke", *args], cwd=REPO, capture_output=True, text=True, timeout=900)
    if run.returncode:
        raise RuntimeError(f"invoke {' '.join(args)}: {run.stderr.strip()[-400:]}")
    return run.stdout


def _ms(text: str) -> float:
    """A latency as wrk prints it (its units: us, ms, s, m, h), in milliseconds."""
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}[unit]


def wrk(url: str, auth: str, clients: int, seconds: int = 10) -> dict:
    run = subprocess.run(["wrk", "-t1", f"-c{clients}", f"-d{seconds}s", "--latency", "-H", f"Authorization: Basic {auth}", url],
                         capture_output=True, text=True, timeout=seconds + 60)
    out = run.stdout
    if not re.search(r"50%\s+[\d.]+(us|ms|s|m|h)\s", out):
        raise RuntimeError(f"wrk {url} with {clients} client(s) measured nothing: {(out + run.stderr).strip()[-600:]}")
    return {"p50 ms": _ms(re.search(r"50%\s+(\S+)", out).group(1)), "p99 ms": _ms(re.search(r"99%\s+(\S+)", out).group(1)),
            "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "errors": int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0}


def _answers(url: str, auth: str, timeout: float = 30) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": f"Basic {auth}"}), timeout=5) as reply:
                reply.read()
                return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"lab.serve did not answer {url}: {exc}") from exc
            time.sleep(0.2)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _leased(lab: str, mac: str) -> bool:
    return any(mac in p.read_text() for p in Path(f"/run/labkit/{lab}/dhcp").glob("*.leases"))


def _lease_wait(lab: str, mac: str, started: float, timeout: float = 120) -> float:
    while not _leased(lab, mac):
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"no DHCP lease for {mac} within {timeout:.0f} s")
        time.sleep(0.05)
    return time.monotonic() - started


def measure(topology: str, say=print) -> dict:
    import base64

    lab = "bench33"
    _invoke("lab.down", "--lab", lab)
    _invoke("lab.up", "--topology", topology, "--no-verify")
    _invoke("acli", "--lab", lab, "-c", "net.create apinet vlan=90 ip_config=10.90.0.1/24")
    _invoke("acli", "--lab", lab, "-c", "net.add_dhcp_pool apinet start=10.90.0.10 end=10.90.0.200")
    password = Path(f"/run/labkit/{lab}/admin.password").read_text().strip()
    port = _free_port()
    server = subprocess.Popen([PYTHON, "-m", "invoke", "lab.serve", "--insecure-http", "--port", str(port)], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out: dict = {}
    try:
        auth = base64.b64encode(f"admin:{password}".encode()).decode()
        url = f"http://127.0.0.1:{port}/api/vmm/v4.3/ahv/config/vms?$limit=50"
        _answers(url, auth)  # the server started: one whole answer first (listening is not yet serving)
        wrk(url, auth, 1, 3)  # warm-up: the password verified once, the list shaped once
        peak, stop = [0.0], threading.Event()

        def sample():
            while not stop.wait(0.1):
                peak[0] = max(peak[0], _rss_mb(server.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        out["list 1 client"] = wrk(url, auth, 1)
        out["list 50 clients"] = wrk(url, auth, 50)
        stop.set()
        sampler.join()
        out["server peak RSS MB"] = peak[0]
        say(f"api: list VMs p50/p99 {out['list 1 client']['p50 ms']:.2f}/{out['list 1 client']['p99 ms']:.2f} ms (1 client), "
            f"{out['list 50 clients']['p50 ms']:.2f}/{out['list 50 clients']['p99 ms']:.2f} ms (50); RSS {peak[0]:.0f} MB")
        sdk, acli = [], []
        for i in range(3):
            sdk.append(_sdk_vm(port, password, lab, f"sdk{i}"))
            acli.append(_acli_vm(lab, f"acli{i}"))
        out["sdk create to lease s"] = statistics.median(sdk)
        out["acli create to lease s"] = statistics.median(acli)
        say(f"api: create to DHCP lease {out['sdk create to lease s']:.2f} s with the SDK, "
            f"{out['acli create to lease s']:.2f} s with acli")
    finally:
        server.terminate()
        server.wait(15)
        _invoke("lab.down", "--lab", lab)
    return out


def _acli_vm(lab: str, name: str) -> float:
    started = time.monotonic()
    _invoke("acli", "--lab", lab, "-c", f"vm.create {name}")
    _invoke("acli", "--lab", lab, "-c", f"vm.nic_create {name} network=apinet")
    _invoke("acli", "--lab", lab, "-c", f"vm.on {name}")
    mac = json.loads(_invoke("acli", "--lab", lab, "-o", "json", "-c", f"vm.nic_get {name}"))["data"][0]["mac_address"]
    took = _lease_wait(lab, mac, started)
    _invoke("acli", "--lab", lab, "-y", "-c", f"vm.delete {name}")
    return took


def _sdk_vm(port: int, password: str, lab: str, name: str) -> float:
    import ntnx_networking_py_client as net
    import ntnx_prism_py_client as prism
    import ntnx_vmm_py_client as vmm

    def client(module):
        cfg = module.Configuration()
        cfg.host, cfg.port, cfg.scheme = "127.0.0.1", port, "http"
        cfg.username, cfg.password = "admin", password
        cfg.max_retry_attempts, cfg.backoff_factor = 1, 0
        return module.ApiClient(configuration=cfg)

    vc = client(vmm)
    vms, tasks = vmm.VmApi(api_client=vc), prism.TasksApi(api_client=client(prism))
    subnet = next(s for s in net.SubnetsApi(api_client=client(net)).list_subnets().data if s.name == "apinet")

    def done(reference):
        while (task := tasks.get_task_by_id(reference.data.ext_id).data).status not in ("SUCCEEDED", "FAILED"):
            time.sleep(0.05)
        if task.status != "SUCCEEDED":
            raise RuntimeError(f"{task.operation} failed: {task.error_messages}")
        return task

    started = time.monotonic()
    nic = vmm.AhvConfigNic(network_info=vmm.AhvConfigNicNetworkInfo(subnet=vmm.SubnetReference(ext_id=subnet.ext_id),
                                                                    ipv4_config=vmm.Ipv4Config(should_assign_ip=True)))
    task = done(vms.create_vm(body=vmm.AhvConfigVm(name=name, memory_size_bytes=128 << 20, nics=[nic])))
    vm_id = next(e.ext_id for e in task.entities_affected if e.rel == "vmm:ahv:config:vm")
    got = vms.get_vm_by_id(vm_id)
    done(vms.power_on_vm(vm_id, if_match=vc.get_etag(got)))
    took = _lease_wait(lab, got.data.nics[0].backing_info.mac_address, started)
    got = vms.get_vm_by_id(vm_id)
    done(vms.delete_vm_by_id(vm_id, if_match=vc.get_etag(got)))
    return took
