"""Prism v2.0 (Prism Element) and v3 (Prism Central's intent API) for older clients and scripts:
the same records as v4 (api/views.py), the same changes (the control plane, as tasks).

v2.0's shapes are control.py's `.v2()` records (shared/reference/ahv-ipam-api.md); v3's are
those Ansible's legacy modules and Terraform's v1 resources read (prism-v4-sdk.md §8.2). The
create forms that reference marks unverified are taken as it gives them.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import JSONResponse

from .. import ipam, names, tasklog
from ..control import VmRecord, network_uuid
from . import shapes
from .app import ERRORS, ApiError, changer, principal, try_change, view_of
from .auth import Principal

V2 = ("/PrismGateway/services/rest/v2.0", "/api/nutanix/v2.0")
V3 = "/api/nutanix/v3"
WAIT_SECONDS = 120.0  # a v2.0 network create answers when it is done


def router() -> APIRouter:
    r = APIRouter(responses=ERRORS)
    Who = Depends(principal)
    for base in V2:
        _v2(r, base, Who)
    _v3(r, Who)
    return r


def _queue(request: Request, who: Principal, make, operation: str, entities: tuple = ()) -> tasklog.Task:
    view = view_of(request, who)
    try_change(view, make)
    return request.app.state.context.jobs.change(who, make, operation, entities)


def _wait(lab: str, task: tasklog.Task) -> tasklog.Task:
    deadline = time.monotonic() + WAIT_SECONDS
    while not (task := tasklog.get(lab, task.uuid) or task).done and time.monotonic() < deadline:
        time.sleep(0.1)
    if task.status == "FAILED":
        raise ApiError(400, task.error)
    return task


def _entities(items: list[dict]) -> dict:
    n = len(items)
    return {"metadata": {"grand_total_entities": n, "total_entities": n, "count": n}, "entities": items}


def _str(body: dict, key: str, required: bool = True) -> str | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise ApiError(400, f"{key} must be a non-empty string")
    return value


def _int(body: dict, key: str, default: int | None = None) -> int | None:
    value = body.get(key, default)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise ApiError(400, f"{key} must be a number")
    return value


# --------------------------------------------------------------------------- v2.0


def _v2_managed(ip_config: dict | None) -> dict | None:
    if not ip_config or not ip_config.get("network_address"):
        return None
    if not isinstance(ip_config, dict):
        raise ApiError(400, "ip_config must be an object")
    spec = {"network": f"{ip_config['network_address']}/{ip_config.get('prefix_length')}",
            "gateway": ip_config.get("default_gateway"),
            "pool": [p.get("range") for p in ip_config.get("pool") or [] if isinstance(p, dict)]}
    if ip_config.get("dhcp_server_address"):
        spec["dhcp_server"] = ip_config["dhcp_server_address"]
    options = ip_config.get("dhcp_options") or {}
    if options.get("domain_name_servers"):
        spec["dns"] = [s for s in str(options["domain_name_servers"]).split(",") if s]
    if options.get("domain_search"):
        spec["domain_search"] = [s for s in str(options["domain_search"]).split(",") if s]
    for key, field in (("domain_name", "domain_name"), ("tftp_server_name", "tftp_server"), ("boot_file_name", "boot_file")):
        if options.get(key):
            spec[field] = options[key]
    return spec


def _v2_vm(lab: str, vm: VmRecord, host_uuids: dict[str, str]) -> dict:
    return {**vm.v2(), "host_uuid": host_uuids.get(vm.host)}


def _v2_task(task: tasklog.Task) -> dict:
    status = {"QUEUED": "Queued", "RUNNING": "Running", "SUCCEEDED": "Succeeded", "FAILED": "Failed"}[task.status]
    return {"uuid": task.uuid, "progress_status": status, "percentage_complete": task.progress,
            "operation_type": task.operation, "create_time_usecs": int(task.created * 1e6),
            "entity_list": [{"entity_id": e.uuid, "entity_type": e.rel.rsplit(":", 1)[-1]} for e in task.entities],
            "meta_response": {"error_code": 1 if task.error else 0, "error_detail": task.error}}


def _v2(r: APIRouter, base: str, Who) -> None:
    tags = ["v2.0"]

    @r.get(f"{base}/networks", tags=tags)
    def networks(request: Request, who: Principal = Who):
        return _entities([n.v2() for n in view_of(request, who).ctl.networks()])

    @r.get(base + "/networks/{uuid}", tags=tags)
    def network(request: Request, uuid: str, who: Principal = Who):
        found = next((n for n in view_of(request, who).ctl.networks() if n.uuid == uuid), None)
        if found is None:
            raise ApiError(404, f"network {uuid!r:.60} does not exist in this cluster")
        return found.v2()

    @r.post(f"{base}/networks", tags=tags)
    def create_network(request: Request, body: dict = Body(...), who: Principal = Who):
        changer(who)
        name, vlan = _str(body, "name"), _int(body, "vlan_id", 0)
        bridge = body.get("vswitch_name") or "br0"
        managed = _v2_managed(body.get("ip_config"))
        task = _queue(request, who, lambda ctl: ctl.subnet_create(name, vlan, bridge, managed), "NetworkCreate",
                      (tasklog.Entity(network_uuid(who.lab, name), shapes.REL["net"], name),))
        _wait(who.lab, task)
        return {"network_uuid": network_uuid(who.lab, name)}

    @r.get(f"{base}/vms", tags=tags)
    def vms(request: Request, who: Principal = Who):
        view = view_of(request, who)
        return _entities([_v2_vm(who.lab, vm, view.host_uuids) for vm in view.ctl.vms()])

    @r.get(base + "/vms/{uuid}", tags=tags)
    def vm(request: Request, uuid: str, who: Principal = Who):
        view = view_of(request, who)
        found = next((v for v in view.ctl.vms() if v.uuid == uuid), None)
        if found is None:
            raise ApiError(404, f"VM {uuid!r:.60} does not exist in this cluster")
        return _v2_vm(who.lab, found, view.host_uuids)

    @r.post(f"{base}/vms", tags=tags)
    def create_vm(request: Request, body: dict = Body(...), who: Principal = Who):
        changer(who)
        view = view_of(request, who)
        name = _str(body, "name")
        vcpus, cores = _int(body, "num_vcpus", 1) or 1, _int(body, "num_cores_per_vcpu", 1) or 1
        nets = {n.uuid: n for n in view.ctl.networks()}
        nics = []
        for nic in body.get("vm_nics") or []:
            net = nets.get(nic.get("network_uuid")) if isinstance(nic, dict) else None
            if net is None:
                raise ApiError(400, "each of vm_nics needs the network_uuid of a network of this cluster")
            spec = {"network": net.name}
            if nic.get("requested_ip_address"):
                spec["ip"] = nic["requested_ip_address"]
            if nic.get("mac_address"):
                spec["mac"] = nic["mac_address"]
            nics.append(spec)
        task = _queue(request, who, lambda ctl: ctl.vm_create(name, _int(body, "memory_mb"), vcpus, nics, cores), "VmCreate",
                      (tasklog.Entity(names.uuid_for(who.lab, name), shapes.REL["vm"], name),))
        return {"task_uuid": task.uuid}

    @r.post(base + "/vms/{uuid}/set_power_state", tags=tags)
    def set_power(request: Request, uuid: str, body: dict = Body(...), who: Principal = Who):
        changer(who)
        transition = str(body.get("transition", "")).lower()
        if transition not in ("on", "off"):
            raise ApiError(400, "transition must be on or off")
        task = _queue(request, who, lambda ctl: ctl.vm_power(uuid, transition == "on"), "VmSetPowerState",
                      (tasklog.Entity(uuid, shapes.REL["vm"]),))
        return {"task_uuid": task.uuid}

    @r.delete(base + "/vms/{uuid}", tags=tags)
    def delete_vm(request: Request, uuid: str, who: Principal = Who):
        changer(who)
        task = _queue(request, who, lambda ctl: ctl.vm_delete(uuid), "VmDelete", (tasklog.Entity(uuid, shapes.REL["vm"]),))
        return {"task_uuid": task.uuid}

    @r.get(f"{base}/hosts", tags=tags)
    def hosts(request: Request, who: Principal = Who):
        return _entities([{"uuid": h.uuid, "name": h.name, "hypervisor_address": h.ip, "service_vmexternal_ip": h.cvm_ip,
                           "num_vms": h.vms, "hypervisor_type": "kKvm", "state": "NORMAL",
                           "cluster_uuid": shapes.cluster_uuid(who.lab)} for h in view_of(request, who).ctl.hosts()])

    @r.get(base + "/tasks/{uuid}", tags=tags)
    def task(request: Request, uuid: str, who: Principal = Who):
        found = tasklog.get(who.lab, uuid.removeprefix(shapes.TASK_PREFIX))
        if found is None:
            raise ApiError(404, f"task {uuid!r:.60} does not exist in this cluster")
        return _v2_task(found)


# --------------------------------------------------------------------------- v3


def _v3_cluster_ref(lab: str) -> dict:
    return {"kind": "cluster", "uuid": shapes.cluster_uuid(lab), "name": lab}


def _v3_subnet(lab: str, net) -> dict:
    resources: dict = {"subnet_type": "VLAN", "vlan_id": net.vlan_id, "vswitch_name": net.vswitch_name,
                       "virtual_switch_uuid": shapes.vswitch_uuid(lab, net.vswitch_name), "is_external": False}
    ipc = net.ip_config
    if ipc is not None:
        options = {"domain_name_server_list": [str(a) for a in ipc.dns], "domain_search_list": list(ipc.domain_search)}
        options |= {k: v for k, v in (("domain_name", ipc.domain_name), ("tftp_server_name", ipc.tftp_server),
                                      ("boot_file_name", ipc.boot_file)) if v}
        resources["ip_config"] = {"subnet_ip": str(ipc.network.network_address), "prefix_length": ipc.network.prefixlen,
                                  "default_gateway_ip": str(ipc.gateway),
                                  "dhcp_server_address": {"ip": str(ipam.dhcp_server(ipc))},
                                  "pool_list": [{"range": text} for text in ipc.pool], "dhcp_options": options}
    body = {"name": net.name, "resources": resources, "cluster_reference": _v3_cluster_ref(lab)}
    return {"metadata": {"uuid": net.uuid, "kind": "subnet", "spec_version": net.logical_timestamp, "categories": {}},
            "spec": body, "status": {**body, "state": "COMPLETE"}}


def _v3_vm(lab: str, vm: VmRecord, host_uuids: dict[str, str]) -> dict:
    nics = [{"subnet_reference": {"kind": "subnet", "uuid": n.network_uuid}, "mac_address": n.mac, "nic_type": "NORMAL_NIC",
             "vlan_mode": "TRUNKED" if n.trunk else "ACCESS", "trunked_vlan_list": list(n.trunked_networks),
             "ip_endpoint_list": [{"ip": n.ip, "type": "ASSIGNED" if n.managed else "LEARNED"}] if n.ip else []}
            for n in vm.nics]
    resources = {"num_sockets": vm.num_vcpus, "num_vcpus_per_socket": vm.cores_per_vcpu, "memory_size_mib": vm.memory_mb,
                 "power_state": "ON" if vm.power_state == "on" else "OFF", "nic_list": nics}
    body = {"name": vm.name, "resources": resources, "cluster_reference": _v3_cluster_ref(lab)}
    status = {**body, "state": "COMPLETE",
              "resources": {**resources, "host_reference": {"kind": "host", "uuid": host_uuids.get(vm.host), "name": vm.host}}}
    return {"metadata": {"uuid": vm.uuid, "kind": "vm", "spec_version": vm.logical_timestamp, "categories": {}},
            "spec": body, "status": status}


def _v3_list(kind: str, entities: list[dict], body: dict) -> dict:
    body = body if isinstance(body, dict) else {}
    for clause in [c for c in str(body.get("filter") or "").split(";") if c]:
        key, sep, value = clause.partition("==")
        if not sep:
            raise ApiError(400, f"filter {clause!r:.60} is not KEY==VALUE (v3's filters: name==web1;vlan_id==10)")
        entities = [e for e in entities if str(_v3_field(e, key.strip())) == value.strip()]
    offset, length = _int(body, "offset", 0) or 0, _int(body, "length", 20) or 20
    if offset < 0 or not 1 <= length <= 500:
        raise ApiError(400, "offset must be 0 or more and length 1 to 500")
    page = entities[offset:offset + length]
    return {"api_version": "3.1", "metadata": {"kind": kind, "total_matches": len(entities), "length": len(page),
                                                "offset": offset}, "entities": page}


def _v3_field(entity: dict, key: str):
    status = entity.get("status", {})
    if key in status:
        return status[key]
    return status.get("resources", {}).get(key)


def _v3_accepted(kind: str, uuid: str, task: tasklog.Task, spec: dict | None = None) -> JSONResponse:
    return JSONResponse({"api_version": "3.1", "metadata": {"kind": kind, "uuid": uuid}, "spec": spec or {},
                         "status": {"state": "PENDING", "execution_context": {"task_uuid": task.uuid}}}, status_code=202)


def _v3(r: APIRouter, Who) -> None:
    tags = ["v3"]

    @r.post(f"{V3}/subnets/list", tags=tags)
    def subnets(request: Request, body: dict = Body(default={}), who: Principal = Who):
        return _v3_list("subnet", [_v3_subnet(who.lab, n) for n in view_of(request, who).ctl.networks()], body)

    @r.get(V3 + "/subnets/{uuid}", tags=tags)
    def subnet(request: Request, uuid: str, who: Principal = Who):
        found = next((n for n in view_of(request, who).ctl.networks() if n.uuid == uuid), None)
        if found is None:
            raise ApiError(404, f"subnet {uuid!r:.60} does not exist in this cluster")
        return _v3_subnet(who.lab, found)

    @r.post(f"{V3}/subnets", tags=tags, status_code=202)
    def create_subnet(request: Request, body: dict = Body(...), who: Principal = Who):
        changer(who)
        spec = body.get("spec") if isinstance(body.get("spec"), dict) else {}
        resources = spec.get("resources") if isinstance(spec.get("resources"), dict) else {}
        name, vlan = _str(spec, "name"), _int(resources, "vlan_id", 0)
        bridge = resources.get("vswitch_name") or "br0"
        ip = resources.get("ip_config") if isinstance(resources.get("ip_config"), dict) else None
        managed = None
        if ip and ip.get("subnet_ip"):
            options = ip.get("dhcp_options") or {}
            managed = {"network": f"{ip['subnet_ip']}/{ip.get('prefix_length')}", "gateway": ip.get("default_gateway_ip"),
                       "pool": [p.get("range") for p in ip.get("pool_list") or [] if isinstance(p, dict)]}
            if options.get("domain_name_server_list"):
                managed["dns"] = options["domain_name_server_list"]
            if options.get("domain_search_list"):
                managed["domain_search"] = options["domain_search_list"]
            for key, field in (("domain_name", "domain_name"), ("tftp_server_name", "tftp_server"),
                               ("boot_file_name", "boot_file")):
                if options.get(key):
                    managed[field] = options[key]
        uuid = network_uuid(who.lab, name)
        task = _queue(request, who, lambda ctl: ctl.subnet_create(name, vlan, bridge, managed), "NetworkCreate",
                      (tasklog.Entity(uuid, shapes.REL["net"], name),))
        return _v3_accepted("subnet", uuid, task, spec)

    @r.delete(V3 + "/subnets/{uuid}", tags=tags, status_code=202)
    def delete_subnet(request: Request, uuid: str, who: Principal = Who):
        changer(who)
        found = next((n for n in view_of(request, who).ctl.networks() if n.uuid == uuid), None)
        if found is None:
            raise ApiError(404, f"subnet {uuid!r:.60} does not exist in this cluster")
        task = _queue(request, who, lambda ctl: ctl.net_delete(found.name), "NetworkDelete",
                      (tasklog.Entity(uuid, shapes.REL["net"], found.name),))
        return _v3_accepted("subnet", uuid, task)

    @r.post(f"{V3}/vms/list", tags=tags)
    def vms(request: Request, body: dict = Body(default={}), who: Principal = Who):
        view = view_of(request, who)
        return _v3_list("vm", [_v3_vm(who.lab, vm, view.host_uuids) for vm in view.ctl.vms()], body)

    @r.get(V3 + "/vms/{uuid}", tags=tags)
    def vm(request: Request, uuid: str, who: Principal = Who):
        view = view_of(request, who)
        found = next((v for v in view.ctl.vms() if v.uuid == uuid), None)
        if found is None:
            raise ApiError(404, f"VM {uuid!r:.60} does not exist in this cluster")
        return _v3_vm(who.lab, found, view.host_uuids)

    @r.post(f"{V3}/vms", tags=tags, status_code=202)
    def create_vm(request: Request, body: dict = Body(...), who: Principal = Who):
        changer(who)
        view = view_of(request, who)
        spec = body.get("spec") if isinstance(body.get("spec"), dict) else {}
        resources = spec.get("resources") if isinstance(spec.get("resources"), dict) else {}
        name = _str(spec, "name")
        vcpus, cores = _int(resources, "num_sockets", 1) or 1, _int(resources, "num_vcpus_per_socket", 1) or 1
        nets = {n.uuid: n for n in view.ctl.networks()}
        nics = []
        for nic in resources.get("nic_list") or []:
            ref = nic.get("subnet_reference") if isinstance(nic, dict) else None
            net = nets.get(ref.get("uuid")) if isinstance(ref, dict) else None
            if net is None:
                raise ApiError(400, "each of nic_list needs a subnet_reference to a subnet of this cluster")
            one = {"network": net.name}
            endpoints = nic.get("ip_endpoint_list") or []
            if endpoints and isinstance(endpoints[0], dict) and endpoints[0].get("ip"):
                one["ip"] = endpoints[0]["ip"]
            if nic.get("mac_address"):
                one["mac"] = nic["mac_address"]
            nics.append(one)
        uuid = names.uuid_for(who.lab, name)
        task = _queue(request, who, lambda ctl: ctl.vm_create(name, _int(resources, "memory_size_mib"), vcpus, nics, cores),
                      "VmCreate", (tasklog.Entity(uuid, shapes.REL["vm"], name),))
        return _v3_accepted("vm", uuid, task, spec)

    @r.delete(V3 + "/vms/{uuid}", tags=tags, status_code=202)
    def delete_vm(request: Request, uuid: str, who: Principal = Who):
        changer(who)
        task = _queue(request, who, lambda ctl: ctl.vm_delete(uuid), "VmDelete", (tasklog.Entity(uuid, shapes.REL["vm"]),))
        return _v3_accepted("vm", uuid, task)

    @r.post(f"{V3}/clusters/list", tags=tags)
    def clusters(request: Request, body: dict = Body(default={}), who: Principal = Who):
        ctl = view_of(request, who).ctl
        hosts = ctl.hosts()
        entity = {"metadata": {"uuid": shapes.cluster_uuid(who.lab), "kind": "cluster"}, "spec": {"name": who.lab},
                  "status": {"name": who.lab, "state": "COMPLETE", "resources": {
                      "config": {"service_list": ["AOS"], "build": {"version": "labkit"}},
                      "network": {"external_ip": hosts[0].cvm_ip if hosts else None},
                      "nodes": {"hypervisor_server_list": [{"ip": h.ip, "type": "AHV"} for h in hosts]}}}}
        return _v3_list("cluster", [entity], body)

    @r.post(f"{V3}/hosts/list", tags=tags)
    def hosts(request: Request, body: dict = Body(default={}), who: Principal = Who):
        entities = [{"metadata": {"uuid": h.uuid, "kind": "host"}, "spec": {"name": h.name},
                     "status": {"name": h.name, "state": "COMPLETE", "resources": {
                         "hypervisor": {"ip": h.ip, "hypervisor_full_name": "AHV (labkit)", "num_vms": h.vms},
                         "controller_vm": {"ip": h.cvm_ip}, "host_type": "HYPER_CONVERGED"},
                         "cluster_reference": _v3_cluster_ref(who.lab)}} for h in view_of(request, who).ctl.hosts()]
        return _v3_list("host", entities, body)

    @r.get(V3 + "/tasks/{uuid}", tags=tags)
    def task(request: Request, uuid: str, who: Principal = Who):
        found = tasklog.get(who.lab, uuid.removeprefix(shapes.TASK_PREFIX))
        if found is None:
            raise ApiError(404, f"task {uuid!r:.60} does not exist in this cluster")
        return {"uuid": found.uuid, "status": found.status, "percentage_complete": found.progress,
                "operation_type": found.operation, "error_detail": found.error,
                "entity_reference_list": [{"kind": e.rel.rsplit(":", 1)[-1], "uuid": e.uuid} for e in found.entities]}
