"""An administrator's automation against a lab's Prism, with the official Nutanix v4 SDKs, as a
script (run by tests/integration/test_prism.py under the current SDKs and, with PYTHONPATH, the
4.0.x ones): `create` makes a managed subnet with a pool and a VM with a NIC on it, powers it on
and prints what it made as JSON; `finish` updates the VM's memory with the ETag of a GET, checks
that a stale ETag is refused (412), powers it off and deletes the VM and the subnet."""

from __future__ import annotations

import argparse
import json
import sys
import time

import ntnx_clustermgmt_py_client as cm
import ntnx_networking_py_client as net
import ntnx_prism_py_client as prism
import ntnx_vmm_py_client as vmm


def client(module, args):
    cfg = module.Configuration()
    cfg.host, cfg.port, cfg.scheme = "127.0.0.1", args.port, args.scheme
    cfg.username, cfg.password = args.user, open(args.password_file).read().strip()
    cfg.verify_ssl = False
    cfg.max_retry_attempts, cfg.backoff_factor = 1, 0
    return module.ApiClient(configuration=cfg)


def waited(tasks, reference, log):
    task_id = reference.data.ext_id
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        task = tasks.get_task_by_id(task_id).data
        if task.status in ("SUCCEEDED", "FAILED"):
            log.append({"operation": task.operation, "status": task.status,
                        "entities": [[e.rel, e.ext_id] for e in task.entities_affected or []]})
            if task.status != "SUCCEEDED":
                raise SystemExit(f"task {task.operation} failed: {task.error_messages}")
            return task
        time.sleep(0.2)
    raise SystemExit(f"task {task_id} did not finish in 180 s")


def create(args) -> dict:
    nc, vc, cc, tasks, log = client(net, args), client(vmm, args), client(cm, args), prism.TasksApi(api_client=client(prism, args)), []
    clusters = cm.ClustersApi(api_client=cc).list_clusters().data
    cluster = next(c for c in clusters if "AOS" in (c.config.cluster_function or []))
    hosts = cm.ClustersApi(api_client=cc).list_hosts().data
    subnets = net.SubnetsApi(api_client=nc)
    v = args.vlan
    body = net.Subnet(name=f"sdk-vlan{v}", subnet_type="VLAN", network_id=v, cluster_reference=cluster.ext_id,
                      ip_config=[net.IPConfig(ipv4=net.IPv4Config(
                          ip_subnet=net.IPv4Subnet(ip=net.IPv4Address(value=f"10.{v}.0.0"), prefix_length=24),
                          default_gateway_ip=net.IPv4Address(value=f"10.{v}.0.1"),
                          pool_list=[net.IPv4Pool(start_ip=net.IPv4Address(value=f"10.{v}.0.100"),
                                                  end_ip=net.IPv4Address(value=f"10.{v}.0.120"))]))],
                      dhcp_options=net.DhcpOptions(domain_name="lab.local", search_domains=["lab.local"]))
    task = waited(tasks, subnets.create_subnet(body=body), log)
    subnet_id = next(ext for rel, ext in [(e.rel, e.ext_id) for e in task.entities_affected] if rel == "networking:config:subnet")
    found = subnets.list_subnets(_filter=f"name eq 'sdk-vlan{v}'").data
    vms = vmm.VmApi(api_client=vc)
    nic = vmm.AhvConfigNic(backing_info=vmm.EmulatedNic(model="VIRTIO", is_connected=True),
                           network_info=vmm.AhvConfigNicNetworkInfo(nic_type="NORMAL_NIC", vlan_mode="ACCESS",
                                                                    subnet=vmm.SubnetReference(ext_id=subnet_id),
                                                                    ipv4_config=vmm.Ipv4Config(should_assign_ip=True)))
    vm = vmm.AhvConfigVm(name=args.vm, num_sockets=1, num_cores_per_socket=1, memory_size_bytes=128 << 20,
                         cluster=vmm.AhvConfigClusterReference(ext_id=cluster.ext_id), nics=[nic])
    task = waited(tasks, vms.create_vm(body=vm), log)
    vm_id = next(e.ext_id for e in task.entities_affected if e.rel == "vmm:ahv:config:vm")
    got = vms.get_vm_by_id(vm_id)
    waited(tasks, vms.power_on_vm(vm_id, if_match=vc.get_etag(got)), log)
    got = vms.get_vm_by_id(vm_id).data
    return {"cluster": cluster.name, "hosts": sorted(h.host_name for h in hosts), "host_cluster": hosts[0].cluster.uuid,
            "subnet": subnet_id, "found": [s.ext_id for s in found or []], "vm": vm_id, "power": got.power_state,
            "ip": got.nics[0].network_info.ipv4_config.ip_address.value, "mac": got.nics[0].backing_info.mac_address,
            "tasks": log}


def finish(args) -> dict:
    nc, vc, tasks, log = client(net, args), client(vmm, args), prism.TasksApi(api_client=client(prism, args)), []
    vms, subnets = vmm.VmApi(api_client=vc), net.SubnetsApi(api_client=nc)
    got = vms.get_vm_by_id(args.vm_id)
    got.data.memory_size_bytes = 192 << 20
    waited(tasks, vms.update_vm_by_id(args.vm_id, body=got.data), log)  # If-Match from the GET's ETag
    try:
        vms.update_vm_by_id(args.vm_id, body=got.data)  # the same ETag again: stale now
        stale = None
    except vmm.rest.ApiException as exc:
        stale = exc.status
    try:
        vms.power_off_vm(args.vm_id)  # no If-Match
        missing = None
    except vmm.rest.ApiException as exc:
        missing = exc.status
    memory = vms.get_vm_by_id(args.vm_id).data.memory_size_bytes >> 20
    got = vms.get_vm_by_id(args.vm_id)
    waited(tasks, vms.power_off_vm(args.vm_id, if_match=vc.get_etag(got)), log)
    got = vms.get_vm_by_id(args.vm_id)
    waited(tasks, vms.delete_vm_by_id(args.vm_id, if_match=vc.get_etag(got)), log)
    subnet = subnets.get_subnet_by_id(args.subnet_id)
    waited(tasks, subnets.delete_subnet_by_id(args.subnet_id, if_match=nc.get_etag(subnet)), log)
    left = vms.list_vms().data or []
    return {"stale": stale, "missing": missing, "memory": memory, "vms_left": [v.name for v in left], "tasks": log}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("phase", choices=("create", "finish"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--scheme", default="http")
    parser.add_argument("--user", default="admin")
    parser.add_argument("--password-file", required=True)
    parser.add_argument("--vlan", type=int, default=60)
    parser.add_argument("--vm", default="sdkvm")
    parser.add_argument("--vm-id")
    parser.add_argument("--subnet-id")
    args = parser.parse_args()
    print(json.dumps((create if args.phase == "create" else finish)(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
