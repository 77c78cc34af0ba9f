"""Nothing a user types reaches another program unchecked: every field of a managed network and of
a VM, fed a newline, '#', '=', quotes, NUL, 64 KiB and non-ASCII, through a topology file and
through acli, is refused in one short sentence, and the lab does not change."""

from __future__ import annotations

import json

import pytest
import yaml

import re

from labkit import acli, model, topology, values
from labkit.errors import LabkitError, TopologyError

from ..conftest import REPO
from .test_acli import MemorySession

HOSTILE = ["lab.local\ndhcp-script=/tmp/x.sh", "x#y", "x=y", 'x"y', "x'y", "x\x00y", "a" * 65536, "wéb",
           "a b", "-x", ""]

# Every field a managed network or a VM has, as a path into a topology with one of each.
NETWORK_FIELDS = ["name", "bridge", "ip_config.network", "ip_config.gateway", "ip_config.pool.0", "ip_config.dhcp_server",
                  "ip_config.dns.0", "ip_config.domain_name", "ip_config.domain_search.0", "ip_config.tftp_server",
                  "ip_config.boot_file", "vlan"]
VM_FIELDS = ["name", "node", "memory", "vcpus", "power", "image", "nics.0.network", "nics.0.ip", "nics.0.mac",
             "nics.0.bridge", "nics.1.trunk.0", "nics.1.ips.40"]
BASE = {
    "name": "hostile",
    "switch": {"vlans": [0, 40], "gateways": {0: "10.59.30.1/23", 40: "10.40.0.1/24"}},
    "nodes": [{"name": "node1", "host_ip": "10.59.31.77/23", "cvm": {"ip": "10.59.30.77/23"},
               "uplinks": {"eth2": "10g"}, "bridges": {"br0": {"bond": {"name": "bond0", "interfaces": ["eth2"]}}}}],
    "networks": [{"name": "mgmt", "vlan": 40, "ip_config": {
        "network": "10.40.0.0/24", "gateway": "10.40.0.1", "pool": ["10.40.0.50 10.40.0.99"], "dhcp_server": "10.40.0.254",
        "dns": ["10.40.0.53"], "domain_name": "lab.local", "domain_search": ["lab.local"], "tftp_server": "10.40.0.5",
        "boot_file": "pxelinux.0"}}],
    "vms": [{"name": "web1", "node": "node1", "memory": "128MiB", "vcpus": 1, "power": "on", "image": "web.qcow2",
             "nics": [{"network": "mgmt", "ip": "10.40.0.10/24", "mac": "50:6b:8d:00:00:01"},
                      {"trunk": [40], "ips": {40: "10.40.0.11/24"}}]}],
}


def with_value(section: str, field: str, value):
    data = json.loads(json.dumps(BASE))
    data["switch"]["gateways"] = {0: "10.59.30.1/23", 40: "10.40.0.1/24"}
    data["vms"][0]["nics"][1]["ips"] = {40: "10.40.0.11/24"}  # JSON made the VLAN a string
    node = data[section][0]
    *path, last = field.split(".")
    for part in path:
        node = node[int(part)] if part.isdigit() and isinstance(node, list) else node[int(part) if part == "40" else part]
    key = int(last) if last.isdigit() else last
    if field == "nics.0.bridge":
        data[section][0]["nics"][0].pop("network")
    node[key] = value
    return data


def test_the_base_is_valid(tmp_path):
    (tmp_path / "web.qcow2").write_bytes(b"")
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(BASE))
    topology.load(str(path))


@pytest.mark.parametrize("value", HOSTILE, ids=lambda v: repr(v)[:12])
@pytest.mark.parametrize("section, field", [("networks", f) for f in NETWORK_FIELDS] + [("vms", f) for f in VM_FIELDS])
def test_a_topology_file_refuses_it_in_one_sentence(tmp_path, section, field, value):
    path = tmp_path / "t.yaml"
    text = yaml.safe_dump(with_value(section, field, value), allow_unicode=True)
    path.write_text(text, encoding="utf-8")
    if field == "image" and value not in ("", "a b", "-x") and "\x00" not in value and "\n" not in value:
        pytest.skip("a file name may hold these: it is passed as one argument and escaped in XML")
    if (section, field) == ("networks", "ip_config.boot_file") and value == "-x":
        assert topology.load(str(path))  # a file name, written into dnsmasq's configuration as one plain token
        return
    if (section, field) == ("vms", "name") and values.printable_text(value) and 0 < len(value) <= 80 and value == value.strip():
        # AHV takes any printable name: what other programs see is derived from it, and plain
        topo = topology.load(str(path))
        lab = model.resolve(topo)
        dom = next(d for d in lab.domains if d.ahv_name == value)
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", dom.name) and re.fullmatch(r"[A-Za-z0-9-]{1,63}", dom.hostname)
        return
    with pytest.raises(TopologyError) as err:
        topology.load(str(path))
    lines = str(err.value).splitlines()
    assert 1 <= len(lines) <= 3, lines
    assert all(len(line) < 400 for line in lines), lines[0][:200]


ACLI = [
    "net.create {v} vlan=50", "net.create n vlan={v}", "net.create n vlan=50 ip_config={v}",
    "net.create n vlan=50 vswitch_name={v}", "net.add_dhcp_pool web start={v} end=10.50.0.120",
    "net.add_dhcp_pool web start=10.50.0.110 end={v}", "net.update_dhcp_dns web servers={v}",
    "net.update_dhcp_dns web domains={v}", "net.update_dhcp_dns web domains=lab.local,{v}",
    "vm.create {v}", "vm.create x memory={v}", "vm.create x num_vcpus={v}", "vm.nic_create web1 network={v}",
    "vm.nic_create web1 network=web ip={v}", "vm.nic_create web1 network=web mac={v}",
    "vm.nic_create web1 network=web vlan_mode=kTrunked trunked_networks={v}", "vm.on {v}", "vm.get {v}",
    "net.get {v}", "vm.nic_update web1 {v} network=vlan0",
]


@pytest.mark.parametrize("value", HOSTILE + ["9" * 5000], ids=lambda v: repr(v)[:12])
@pytest.mark.parametrize("line", ACLI)
def test_acli_refuses_it_in_one_sentence_and_changes_nothing(line, value):
    if value == "" and ("update_dhcp_dns" in line or "mac=" in line):
        pytest.skip("an empty value there means none (no DNS servers, no search domains, a MAC chosen by labkit)")
    session = MemorySession(topology.load(str(REPO / "tests/topologies/training.yaml")))
    for setup in ("net.create web vlan=50 ip_config=10.50.0.1/24", "net.add_dhcp_pool web start=10.50.0.100 end=10.50.0.101",
                  "vm.create web1", "vm.nic_create web1 network=web"):
        acli.execute(session, setup, say=lambda _m: None)
    before = session.topo, session.state.ledger
    quoted = "'" + value.replace("'", "'\"'\"'") + "'"
    if line == "vm.create {v}" and values.printable_text(value) and 0 < len(value) <= 80 and value == value.strip() \
            and "=" not in value:
        acli.execute(session, line.format(v=quoted), say=lambda _m: None)  # a name AHV takes
        (made,) = [vm for vm in session.topo.vms if vm.name == value]
        return
    with pytest.raises(LabkitError) as err:
        acli.execute(session, line.format(v=quoted), say=lambda _m: pytest.fail("a refused command announced a task"))
    message = str(err.value)
    assert "\n" not in message and len(message) < 400, message[:300]
    assert (session.topo, session.state.ledger) == before
