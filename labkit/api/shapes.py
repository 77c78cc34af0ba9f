"""Prism v4's JSON, from the control plane's records and back (pure: no web framework here).

What the official v4 SDKs send and accept is shared/reference/prism-v4-sdk.md: every entity and
list item carries `$objectType` (the SDK picks its class by it) and `$reserved` (where it puts the
ETag it reads from the header); NICs are written in both shapes the SDKs know; enums are Prism's
upper-case strings; ids are UUIDs; task ids are `ZXJnb24=:<uuid>`. Requests are read leniently
(`$`-keys and the SDK's defaults ignored) and every value goes to the control plane, which checks
it as it checks a topology file's.
"""

from __future__ import annotations

import hashlib
import ipaddress
import time

from .. import ipam, names
from ..control import Control, NetworkRecord, NicRecord, VmRecord
from ..control_hosts import HostRecord
from ..tasklog import Task

TASK_PREFIX = "ZXJnb24=:"  # base64("ergon"): Prism Central's task ids
REL = {"net": "networking:config:subnet", "vm": "vmm:ahv:config:vm", "nic": "vmm:ahv:config:vm:nic",
       "host": "clustermgmt:config:host"}


class BadRequest(ValueError):
    """A request body that does not say what the API needs (a 400 with this sentence)."""


def etag(uuid: str, stamp: int) -> str:
    """An opaque ETag from a record's identity and logical timestamp (it changes with every change)."""
    return hashlib.sha256(f"{uuid}:{stamp}".encode()).hexdigest()[:16]


def cluster_uuid(lab: str) -> str:
    return names.uuid_for(lab, "cluster")


def vswitch_uuid(lab: str, bridge: str) -> str:
    return names.uuid_for(lab, "vswitch", bridge)


def _ip(value) -> dict:
    return {"value": str(value), "prefixLength": 32}


def _entity(kind: str, fields: dict, tag: str | None = None) -> dict:
    return {"$objectType": kind, "$reserved": {"ETag": tag} if tag else {}, **fields}


# --------------------------------------------------------------------------- networking


def subnet(lab: str, net: NetworkRecord) -> dict:
    fields = {"extId": net.uuid, "name": net.name, "subnetType": "VLAN", "networkId": net.vlan_id,
              "clusterReference": cluster_uuid(lab), "clusterName": lab, "bridgeName": net.vswitch_name,
              "virtualSwitchReference": vswitch_uuid(lab, net.vswitch_name), "isExternal": False,
              "isConnected": True, "hypervisorType": "AHV", "isAdvancedNetworking": False}
    ipc = net.ip_config
    if ipc is not None:
        ipv4 = {"ipSubnet": {"ip": _ip(ipc.network.network_address), "prefixLength": ipc.network.prefixlen},
                "defaultGatewayIp": _ip(ipc.gateway), "dhcpServerAddress": _ip(ipam.dhcp_server(ipc)),
                "poolList": [{"startIp": _ip(start), "endIp": _ip(end)} for start, end in ipam.ranges(ipc)]}
        fields["ipConfig"] = [{"ipv4": ipv4}]
        options = {"domainNameServers": [{"ipv4": _ip(a)} for a in ipc.dns], "searchDomains": list(ipc.domain_search)}
        options |= {"domainName": ipc.domain_name} if ipc.domain_name else {}
        options |= {"tftpServerName": ipc.tftp_server} if ipc.tftp_server else {}
        options |= {"bootFileName": ipc.boot_file} if ipc.boot_file else {}
        fields["dhcpOptions"] = options
        pools = []
        for start, end in ipam.ranges(ipc):
            one = ipc.model_copy(update={"pool": [f"{start} {end}"]})
            free, total = ipam.free_count(one, set(net.assigned))
            pools.append({"numFreeIPs": free, "numTotalIPs": total, "range": {"startIp": _ip(start), "endIp": _ip(end)}})
        fields["ipUsage"] = {"numMacs": len(net.assigned), "numAssignedIPs": len(net.assigned),
                             "numFreeIPs": sum(p["numFreeIPs"] for p in pools), "ipPoolUsages": pools}
    return _entity("networking.v4.config.Subnet", fields, etag(net.uuid, net.logical_timestamp))


def _value(obj, *path, default=None):
    for key in path:
        if isinstance(obj, list):
            obj = obj[0] if obj else None
        if not isinstance(obj, dict) or key not in obj:
            return default
        obj = obj[key]
    return obj


def subnet_spec(body: dict, ctl: Control) -> tuple[str, int, str, dict | None]:
    """(name, VLAN, bridge, managed settings or None) from a v4 Subnet body."""
    if not isinstance(body, dict):
        raise BadRequest("the body is not a JSON object; send a networking.v4.config.Subnet")
    name = body.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest("a subnet needs a name")
    if body.get("subnetType", "VLAN") != "VLAN":
        raise BadRequest(f"subnetType {body.get('subnetType')!r:.40} is not modelled in this lab; use VLAN")
    vlan = body.get("networkId")
    if not isinstance(vlan, int) or isinstance(vlan, bool) or not 0 <= vlan <= 4094:
        raise BadRequest("networkId (the subnet's VLAN) must be a number from 0 to 4094")
    bridge = "br0"
    switch = body.get("virtualSwitchReference")
    if switch is not None:
        bridge = next((b for b in _bridges(ctl) if vswitch_uuid(ctl.topo.name, b) == switch), None)
        if bridge is None:
            raise BadRequest(f"virtualSwitchReference {switch!r:.60} is not a virtual switch of this cluster; "
                             f"leave it out for vs0 (br0)")
    return name, vlan, bridge, managed_spec(body)


def _bridges(ctl: Control) -> list[str]:
    return sorted({b for node in ctl.topo.nodes for b in node.bridges})


def managed_spec(body: dict) -> dict | None:
    """IPAM's settings (topology.IpConfig's keys) from a Subnet's ipConfig and dhcpOptions."""
    ipv4 = _value(body, "ipConfig", "ipv4")
    if not ipv4:
        return None
    network, prefix = _value(ipv4, "ipSubnet", "ip", "value"), _value(ipv4, "ipSubnet", "prefixLength")
    gateway = _value(ipv4, "defaultGatewayIp", "value")
    if not isinstance(network, str) or not isinstance(prefix, int) or not isinstance(gateway, str):
        raise BadRequest("ipConfig[0].ipv4 needs ipSubnet (ip.value and prefixLength) and defaultGatewayIp.value")
    try:
        subnet_net = str(ipaddress.IPv4Network(f"{network}/{prefix}", strict=False))
    except ValueError:
        raise BadRequest(f"ipSubnet {network!r:.40}/{prefix!r:.10} is not an IPv4 subnet") from None
    spec: dict = {"network": subnet_net, "gateway": gateway, "pool": []}
    for pool in ipv4.get("poolList") or []:
        start, end = _value(pool, "startIp", "value"), _value(pool, "endIp", "value")
        if not isinstance(start, str) or not isinstance(end, str):
            raise BadRequest("each poolList entry needs startIp.value and endIp.value")
        spec["pool"].append(f"{start} {end}")
    if (server := _value(ipv4, "dhcpServerAddress", "value")) is not None:
        spec["dhcp_server"] = server
    options = body.get("dhcpOptions") or {}
    if not isinstance(options, dict):
        raise BadRequest("dhcpOptions must be an object")
    servers = [_value(s, "ipv4", "value") for s in options.get("domainNameServers") or []]
    if servers:
        spec["dns"] = servers
    for key, field in (("domainName", "domain_name"), ("tftpServerName", "tftp_server"), ("bootFileName", "boot_file")):
        if options.get(key) is not None:
            spec[field] = options[key]
    if options.get("searchDomains"):
        spec["domain_search"] = options["searchDomains"]
    return spec


# --------------------------------------------------------------------------- vmm


def nic(lab: str, vm: VmRecord, record: NicRecord) -> dict:
    backing = {"model": "VIRTIO", "macAddress": record.mac, "isConnected": True, "numQueues": 1}
    network = {"nicType": "NORMAL_NIC", "vlanMode": "TRUNK" if record.trunk else "ACCESS",
               "subnet": {"extId": record.network_uuid} if record.network_uuid else None,
               "trunkedVlans": list(record.trunked_networks), "shouldAllowUnknownMacs": False}
    if record.ip:
        network["ipv4Config"] = {"shouldAssignIp": record.managed, "ipAddress": _ip(record.ip)}
        network["ipv4Info"] = {"learnedIpAddresses": [_ip(record.ip)]}
    return {"$objectType": "vmm.v4.ahv.config.Nic", "$reserved": {}, "extId": record.uuid,
            "backingInfo": {"$objectType": "vmm.v4.ahv.config.EmulatedNic", **backing},
            "networkInfo": {"$objectType": "vmm.v4.ahv.config.NicNetworkInfo", **network},
            "nicBackingInfo": {"$objectType": "vmm.v4.ahv.config.VirtualEthernetNic", **backing},
            "nicNetworkInfo": {"$objectType": "vmm.v4.ahv.config.VirtualEthernetNicNetworkInfo", **network}}


def vm(lab: str, record: VmRecord, hosts: dict[str, str]) -> dict:
    fields = {"extId": record.uuid, "name": record.name, "numSockets": record.num_vcpus,
              "numCoresPerSocket": record.cores_per_vcpu,
              "numThreadsPerCore": 1, "memorySizeBytes": record.memory_mb << 20,
              "powerState": "ON" if record.power_state == "on" else "OFF", "cluster": {"extId": cluster_uuid(lab)},
              "host": {"extId": hosts[record.host]} if record.host in hosts else None,
              "nics": [nic(lab, record, n) for n in record.nics], "disks": [], "cdRoms": [], "machineType": "PC",
              "hardwareClockTimezone": "UTC", "biosUuid": record.uuid, "isAgentVm": False}
    return _entity("vmm.v4.ahv.config.Vm", fields, etag(record.uuid, record.logical_timestamp))


def nic_spec(body: dict, ctl: Control) -> dict:
    """A NIC (network name, and ip, mac, trunked_networks where given) from either shape the SDKs send."""
    if not isinstance(body, dict):
        raise BadRequest("a NIC must be a JSON object")
    network = body.get("nicNetworkInfo") or body.get("networkInfo") or {}
    backing = body.get("nicBackingInfo") or body.get("backingInfo") or {}
    if not isinstance(network, dict) or not isinstance(backing, dict):
        raise BadRequest("a NIC's networkInfo and backingInfo must be objects")
    subnet_id = _value(network, "subnet", "extId")
    if not isinstance(subnet_id, str):
        raise BadRequest("a NIC needs networkInfo.subnet.extId (the subnet it is on)")
    net = next((n for n in ctl.networks() if n.uuid == subnet_id), None)
    if net is None:
        raise BadRequest(f"subnet {subnet_id!r:.60} does not exist in this cluster")
    if backing.get("model", "VIRTIO") != "VIRTIO":
        raise BadRequest(f"NIC model {backing.get('model')!r:.20} is not modelled in this lab; use VIRTIO")
    spec: dict = {"network": net.name}
    if isinstance(backing.get("macAddress"), str):
        spec["mac"] = backing["macAddress"]
    mode = network.get("vlanMode", "ACCESS")
    if mode not in ("ACCESS", "TRUNK"):
        raise BadRequest(f"vlanMode {mode!r:.20} is not ACCESS or TRUNK")
    if mode == "TRUNK":
        vlans = network.get("trunkedVlans") or []
        if not isinstance(vlans, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in vlans):
            raise BadRequest("trunkedVlans must be a list of VLAN numbers")
        spec["trunked_networks"] = vlans
    config = network.get("ipv4Config") or {}
    address = _value(config, "ipAddress", "value")
    if config.get("shouldAssignIp") and isinstance(address, str) and net.managed:
        spec["ip"] = address
    elif isinstance(address, str) and not net.managed:
        spec["ip"] = address  # the control plane answers with AHV's words
    return spec


def vm_spec(body: dict, ctl: Control) -> tuple[str, int | None, int, int, list[dict]]:
    """(name, memory MiB, sockets, cores per socket, NICs) from a v4 Vm body."""
    if not isinstance(body, dict):
        raise BadRequest("the body is not a JSON object; send a vmm.v4.ahv.config.Vm")
    name = body.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest("a VM needs a name")
    memory = body.get("memorySizeBytes")
    if memory is not None and (not isinstance(memory, int) or isinstance(memory, bool) or memory <= 0):
        raise BadRequest("memorySizeBytes must be a positive number of bytes")
    sockets, cores = body.get("numSockets") or 1, body.get("numCoresPerSocket") or 1
    if not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 256 for v in (sockets, cores)):
        raise BadRequest("numSockets and numCoresPerSocket must be numbers from 1 to 256")
    nics = body.get("nics") or []
    if not isinstance(nics, list):
        raise BadRequest("nics must be a list")
    return name, (memory >> 20) if memory else None, sockets, cores, [nic_spec(n, ctl) for n in nics]


# --------------------------------------------------------------------------- clustermgmt


def host(lab: str, record: HostRecord) -> dict:
    return _entity("clustermgmt.v4.config.Host", {
        "extId": record.uuid, "hostName": record.name, "hostType": "HYPER_CONVERGED",
        "cluster": {"uuid": cluster_uuid(lab), "name": lab},
        "hypervisor": {"type": "AHV", "fullName": "AHV (labkit)", "externalAddress": {"ipv4": _ip(record.ip)},
                       "state": "ENTERED_MAINTENANCE_MODE" if record.maintenance else "ACROPOLIS_NORMAL",
                       "numberOfVms": record.vms, "acropolisConnectionState": "CONNECTED"},
        "controllerVm": {"externalAddress": {"ipv4": _ip(record.cvm_ip)}},
        "nodeStatus": "NORMAL", "maintenanceState": "entered" if record.maintenance else "normal",
        "memorySizeBytes": record.memory_mib << 20, "numberOfCpuSockets": 1})


def cluster(lab: str, ctl: Control) -> dict:
    hosts = ctl.hosts()
    return _entity("clustermgmt.v4.config.Cluster", {
        "extId": cluster_uuid(lab), "name": lab, "vmCount": len(ctl.topo.vms),
        "config": {"clusterFunction": ["AOS"], "hypervisorTypes": ["AHV"], "buildInfo": {"version": "labkit"},
                   "isAvailable": True, "redundancyFactor": 1, "clusterArch": "X86_64", "timezone": "UTC"},
        "nodes": {"numberOfNodes": len(hosts), "nodeList": [
            {"nodeUuid": h.uuid, "controllerVmIp": {"ipv4": _ip(h.cvm_ip)}, "hostIp": {"ipv4": _ip(h.ip)}} for h in hosts]},
        "network": {"externalAddress": {"ipv4": _ip(hosts[0].cvm_ip)} if hosts else None}})


# --------------------------------------------------------------------------- prism


def _rfc3339(when: float | None) -> str | None:
    if when is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when)) + f".{int(when % 1 * 1e6):06d}Z"


def task(lab: str, record: Task) -> dict:
    fields = {"extId": TASK_PREFIX + record.uuid, "operation": record.operation, "status": record.status,
              "progressPercentage": record.progress, "createdTime": _rfc3339(record.created),
              "startedTime": _rfc3339(record.started), "completedTime": _rfc3339(record.completed),
              "lastUpdatedTime": _rfc3339(record.completed or record.started or record.created),
              "entitiesAffected": [{"extId": e.uuid, "rel": e.rel, "name": e.name} for e in record.entities],
              "clusterExtIds": [cluster_uuid(lab)], "isCancelable": False, "ownedBy": {"name": record.user} if record.user else None}
    if record.error:
        fields["errorMessages"] = [{"$objectType": "prism.v4.error.AppMessage", "message": record.error,
                                    "code": "LABKIT-TASK", "severity": "ERROR", "locale": "en_US"}]
    return _entity("prism.v4.config.Task", fields)


def task_reference(record: Task) -> dict:
    return {"data": {"$objectType": "prism.v4.config.TaskReference", "$reserved": {},
                     "extId": TASK_PREFIX + record.uuid}}


def error(namespace: str, message: str, code: str) -> dict:
    """Prism's ErrorResponse, which Ansible reads (json.loads of the body)."""
    return {"data": {"$objectType": f"{namespace}.v4.error.ErrorResponse", "error": [
        {"$objectType": f"{namespace}.v4.error.AppMessage", "message": message, "severity": "ERROR",
         "code": code, "locale": "en_US"}]}}
