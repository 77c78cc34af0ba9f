"""The default lab on the real host: up, the seed's shape, idempotency, differences, down, safety.

Tests run in file order against one lab; the last ones take it down and
check that the host is as it was, foreign objects included.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time

import pytest

from labkit import model, pipeline

from ..conftest import REPO
from .conftest import Terminal, invoke, labkit_leftovers, root_namespace, sh

LAB = "seed"
NODE_NS = "labkit.seed.DRM-3060-G4-1-1"
CVM = "NTNX-DRM-3060-G4-1-1-CVM"
FOREIGN_NET = """<network><name>labkit-test-foreign</name><bridge name='lkfrgn0'/></network>"""


@pytest.fixture(scope="module")
def foreign(tmp_path_factory):
    """Objects that are not labkit's: they must survive every lab command."""
    invoke("lab.down")  # a lab an earlier run left behind must not spoil this one
    path = tmp_path_factory.mktemp("foreign") / "net.xml"
    path.write_text(FOREIGN_NET)
    remove_foreign()  # an earlier run that was killed may have left them
    sh("ovs-vsctl --may-exist add-br lkfrgn-br -- set Bridge lkfrgn-br datapath_type=netdev")
    sh(f"virsh -c qemu:///system net-define {path}")
    sh("ip netns add lkfrgn-ns")
    sh("ip link add lkfrgn-a type veth peer name lkfrgn-b")
    before = root_namespace()
    yield before
    remove_foreign()


def remove_foreign() -> None:
    sh("ovs-vsctl --if-exists del-br lkfrgn-br")
    sh("virsh -c qemu:///system net-undefine labkit-test-foreign", check=False)
    sh("ip netns del lkfrgn-ns", check=False)
    sh("ip link del lkfrgn-a", check=False)


@pytest.fixture(scope="module")
def lab_up(foreign):
    run = invoke("lab.up")
    yield run
    invoke("lab.down")


def test_up_reports_what_it_built_and_every_deviation(lab_up):
    err = lab_up.stderr
    assert "verified: 8 network checks passed from inside the guests" in err
    assert "lab seed is up" in err
    assert "virbr0 is held by another owner" in err  # Debian's default network keeps virbr0
    assert "eth0 is held by another owner" in err  # the workstation's NIC keeps eth0
    assert "no <locked/>" in err and "no <hostdev>" in err


def test_ovs_looks_like_the_seed(lab_up):
    show = sh("ovs-vsctl show")
    br0 = show[show.index("Bridge br0"):]
    br0 = br0[:br0.index("Bridge", 10)] if "Bridge" in br0[10:] else br0
    assert re.search(r'Port bond0\n\s+Interface eth[23]\n\s+Interface eth[23]', br0), br0
    assert re.search(r'Port br0\n\s+Interface br0\n\s+type: internal', br0), br0
    assert re.search(r'Port tap\d{5}\n\s+tag: 32\n\s+Interface tap\d{5}', br0), br0
    assert re.search(r'Port vnet\d+\n\s+Interface vnet\d+', br0), br0
    expected_id = model.resolve(pipeline.load(None)).domain(CVM).nics[0].interfaceid
    vnet = re.search(r"Port (vnet\d+)", br0).group(1)
    assert sh(f"ovs-vsctl get Interface {vnet} external_ids:iface-id").strip().strip('"') == expected_id
    assert sh("ovs-vsctl get Bridge br0 datapath_type").strip() in ("netdev", "system")


def test_libvirt_looks_like_the_seed(lab_up):
    nets = sh("virsh -c qemu:///system net-list")
    assert re.search(r"NTNX-Local-Network\s+active", nets) and re.search(r"VM-Network\s+active", nets)
    doms = sh("virsh -c qemu:///system list --name").split()
    assert CVM in doms and "uvm32" in doms
    xml = sh(f"virsh -c qemu:///system dumpxml {CVM}")
    assert "<virtualport type='openvswitch'>" in xml and "<source network='NTNX-Local-Network'" in xml


def test_node_namespace_holds_the_host_identity_and_reaches_the_lab(lab_up):
    addrs = sh(f"ip netns exec {NODE_NS} ip -br addr")
    assert re.search(r"^br0@\S+\s+UP\s+10\.59\.31\.77/23", addrs, re.M), addrs
    assert re.search(r"^virbr0@\S+\s+UP\s+192\.168\.5\.1/24", addrs, re.M), addrs
    assert "default via 10.59.30.1 dev br0" in sh(f"ip netns exec {NODE_NS} ip route")
    sh(f"ip netns exec {NODE_NS} ping -c1 -W2 10.59.30.1")  # the gateway namespace, through bond0 and the ToR
    wait_ping(NODE_NS, "10.59.30.77")  # the CVM's eth0 over OVS br0 (it boots under TCG in seconds)
    wait_ping(NODE_NS, "192.168.5.254")  # the CVM's eth1:1 over NTNX-Local-Network


def test_the_workstations_addresses_and_routes_are_untouched_while_the_lab_runs(lab_up, foreign):
    assert root_namespace() == foreign  # IPv4 and IPv6, every table: not even a link-local address


def wait_ping(netns: str, address: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while "1 received" not in sh(f"ip netns exec {netns} ping -c1 -W1 {address}", check=False):
        assert time.monotonic() < deadline, f"{address} never answered from {netns}"


def test_status_json_is_healthy_and_names_the_namespace(lab_up):
    report = json.loads(invoke("lab.status", "--json").stdout)
    assert report["version"] == 1 and report["lab"] == LAB and report["healthy"], report
    assert report["namespaces"] == {"DRM-3060-G4-1-1": NODE_NS}
    kinds = {o["kind"] for o in report["objects"]}
    assert {"netns", "veth", "ovs-bridge", "ovs-port", "network", "domain", "vm-port"} <= kinds
    tap = next(o for o in report["objects"] if o["name"] == "uvm32/eth0")
    assert tap["healthy"] and "tag 32" in tap["detail"]


def test_second_up_changes_nothing(lab_up):
    ids = sh("virsh -c qemu:///system list --all")
    ovs = sh("ovs-vsctl --format=json list Port")
    run = invoke("lab.up", "--no-verify")
    assert "nothing to do, the host already matches" in run.stderr
    assert sh("virsh -c qemu:///system list --all") == ids  # same domain ids: nothing restarted
    assert json.loads(sh("ovs-vsctl --format=json list Port")) == json.loads(ovs)


def imports_of(*args: str) -> tuple[set[str], str]:
    """The modules an invoke command imports (python -X importtime), and its stderr."""
    run = subprocess.run([sys.executable, "-X", "importtime", "-m", "invoke", *args], cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    modules = {line.rsplit("|", 1)[1].strip() for line in run.stderr.splitlines() if line.startswith("import time:")}
    return modules, run.stderr


def test_a_no_op_up_decides_again_only_when_the_host_facts_change(lab_up):
    """memo.py: a repeated lab.up neither validates, resolves nor renders (no pydantic, no jinja2);
    a name taken on the host meanwhile makes it decide again, and it still has nothing to do."""
    invoke("lab.up", "--no-verify")
    modules, stderr = imports_of("lab.up", "--no-verify")
    assert "nothing to do" in stderr and not {"pydantic", "jinja2", "labkit.topology", "labkit.render"} & modules
    sh("ip link add lkmemo0 type veth peer name lkmemo1")
    try:
        modules, stderr = imports_of("lab.up", "--no-verify")
        assert "nothing to do" in stderr and {"labkit.topology", "labkit.render"} <= modules
    finally:
        sh("ip link del lkmemo0")


def test_up_repairs_a_hand_changed_tag_and_a_virsh_edit(lab_up, tmp_path):
    """Drift the metadata digest cannot show: status reports it, lab.up repairs it and says so."""
    tap = next(name for name in sh("ovs-vsctl --bare --columns=name find Port tag=32").split() if name.startswith("tap"))
    sh(f"ovs-vsctl set Port {tap} tag=0")
    status = invoke("lab.status", expect=1).stdout
    assert re.search(r"vm-port\s+uvm32/eth0 .* tag 0, want 32", status), status
    ids = sh("virsh -c qemu:///system list")
    run = invoke("lab.up", "--no-verify")
    assert f"repairing vm-port {tap}: tag 0, want tag 32" in run.stderr
    assert sh(f"ovs-vsctl get Port {tap} tag").strip() == "32"
    assert sh("virsh -c qemu:///system list") == ids  # the guest was not restarted for it
    edited = tmp_path / "uvm32.xml"  # virsh edit: the definition changes, labkit's metadata stays
    edited.write_text(re.sub(r"<vcpu([^>]*)>1</vcpu>", r"<vcpu\1>2</vcpu>",
                             sh("virsh -c qemu:///system dumpxml --inactive uvm32")))
    sh(f"virsh -c qemu:///system define {edited}")
    assert "changed on the host: 2 vCPUs, want 1" in invoke("lab.status", expect=1).stdout
    assert "repairing domain uvm32: 2 vCPUs, want 1" in invoke("lab.up", "--no-verify").stderr
    assert "<vcpu placement='static'>1</vcpu>" in sh("virsh -c qemu:///system dumpxml --inactive uvm32")
    assert json.loads(invoke("lab.status", "--json").stdout)["healthy"]


def test_changed_topology_applies_only_the_difference(lab_up, tmp_path):
    text = (REPO / "examples/seed.yaml").read_text()
    text += "  - {name: uvm32b, node: DRM-3060-G4-1-1, nics: [{network: vlan32, ip: 10.32.0.12/24}]}\n"
    changed = tmp_path / "seed.yaml"
    changed.write_text(text)
    cvm_id = sh(f"virsh -c qemu:///system domid {CVM}")
    plan = invoke("lab.plan", "--topology", str(changed)).stdout
    assert "+ create domain       uvm32b" in plan and plan.count("\n  ") == 1, plan
    invoke("lab.up", "--no-verify", "--topology", str(changed))
    assert sh(f"virsh -c qemu:///system domid {CVM}") == cvm_id
    assert "uvm32b" in sh("virsh -c qemu:///system list --name").split()
    invoke("lab.up", "--no-verify", "--topology", str(REPO / "examples/seed.yaml"))  # back: uvm32b is removed
    assert "uvm32b" not in sh("virsh -c qemu:///system list --all --name").split()


def test_verify_matrix_from_inside_the_guests(lab_up):
    run = invoke("lab.verify", "--json")
    report = json.loads(run.stdout)
    assert report["ok"] and report["version"] == 1
    checks = {(c["from"], c["to"]): c for c in report["checks"]}
    assert checks[(CVM, "node DRM-3060-G4-1-1")]["reached"]  # the CVM reaches 192.168.5.1
    assert checks[(CVM, "gw0")]["reached"]  # and its gateway 10.59.30.1
    assert checks[("node DRM-3060-G4-1-1", f"{CVM} eth1:1")]["reached"]
    assert checks[("uvm32", "gw32")]["reached"]
    assert checks[("uvm32", f"{CVM} eth0")] == {**checks[("uvm32", f"{CVM} eth0")], "expect": "blocked", "reached": False}


def test_verify_names_the_broken_pair_when_a_vm_is_on_the_wrong_vlan(lab_up):
    tap = re.search(r"Port (tap\d{5})", sh("ovs-vsctl show")).group(1)
    sh(f"ovs-vsctl set Port {tap} tag=0")  # uvm32 moved from VLAN 32 to the CVM's VLAN
    try:
        run = invoke("lab.verify", expect=1)
        assert "uvm32 cannot reach gw32 (10.32.0.1)" in run.stderr
        assert f"uvm32 reaches {CVM} eth0 (10.59.30.77) across VLANs; they must be isolated" in run.stderr
        status = json.loads(invoke("lab.status", "--json", expect=1).stdout)
        port = next(o for o in status["objects"] if o["name"] == "uvm32/eth0")
        assert not port["healthy"] and "tag 0, want 32" in port["detail"]
    finally:
        sh(f"ovs-vsctl set Port {tap} tag=32")
    invoke("lab.verify")


def test_verify_names_the_vm_that_does_not_come_up(lab_up):
    sh("virsh -c qemu:///system suspend uvm32")  # its agent cannot answer
    try:
        run = invoke("lab.verify", "--timeout", "5", expect=4)
        assert "VM uvm32 did not come up within 5 s (its agent never answered)" in run.stderr
        assert "/var/log/labkit/seed/uvm32.serial.log" in run.stderr
    finally:
        sh("virsh -c qemu:///system resume uvm32")


def test_verify_fails_when_a_tap_is_down(lab_up):
    tap = re.search(r"Port (tap\d{5})", sh("ovs-vsctl show")).group(1)
    sh(f"ip link set {tap} down")
    try:
        run = invoke("lab.verify", expect=1)
        assert "uvm32 cannot reach gw32 (10.32.0.1)" in run.stderr
    finally:
        sh(f"ip link set {tap} up")


def test_console_cmd_shows_the_cvm_local_addresses(lab_up):
    out = invoke("lab.console", "cvm", "--cmd", "ip addr show eth1").stdout
    assert "inet 192.168.5.2/25" in out
    assert re.search(r"inet 192\.168\.5\.254/24 brd 192\.168\.5\.255 scope global eth1:1", out), out
    assert invoke("lab.console", "cvm", "--cmd", "hostname").stdout.strip() == CVM
    assert invoke("lab.console", "uvm32", "--cmd", "exit 7", expect=7).stdout == ""


def test_interactive_console_reaches_the_guest_shell_and_leaves_on_ctrl_bracket(lab_up):
    term = Terminal("lab.console", "uvm32")
    term.read_until(b"Ctrl-] leaves")
    term.read_until(b"/ # ")
    term.settle()
    term.write(b"echo lk-$((6*7)); hostname\r")
    term.read_until(b"lk-42")
    term.read_until(b"uvm32")
    term.write(b"\x1d")
    assert term.exit_status() == 0


def test_manage_ovs_shows_and_changes_the_live_bond(lab_up):
    shown = invoke("manage-ovs", "show_uplinks").stdout
    assert shown.splitlines() == ["Bridge: br0", "  Bond: bond0", "    bond_mode: active-backup",
                                  "    interfaces: eth3 eth2", "    lacp: off", "    lacp-fallback: false",
                                  "    lacp_speed: slow"]
    assert "eth2 10000 True 10000" in invoke("manage-ovs", "show_interfaces").stdout.splitlines()
    invoke("manage-ovs", "update_uplinks", "--bridge_name", "br0", "--interfaces", "10g", "--bond_mode", "balance-tcp",
           "--lacp_mode", "fast", "--lacp_fallback", "true")
    bond = sh("ovs-appctl bond/show bond0")
    assert "bond_mode: balance-tcp" in bond and "lacp_fallback_ab: true" in bond
    deadline = time.monotonic() + 30  # LACP negotiates within a few fast (1 s) periods
    while "lacp_status: negotiated" not in sh("ovs-appctl bond/show bond0"):
        assert time.monotonic() < deadline, sh("ovs-appctl lacp/show bond0")
        time.sleep(1)
    assert "status: active negotiated" in sh("ovs-appctl lacp/show bond0")
    assert "nothing to do" in invoke("lab.plan").stdout  # the lab's topology now holds the change
    invoke("lab.verify")
    invoke("manage-ovs", "update_uplinks", "--interfaces", "eth2,eth3")  # no --bond_mode: back to active-backup
    assert "bond_mode: active-backup" in sh("ovs-appctl bond/show bond0")
    assert "lacp: off" in invoke("manage-ovs", "show_uplinks").stdout
    run = invoke("manage-ovs", "update_uplinks", "--interfaces", "40g", expect=1)
    assert "no 40g uplinks on this node" in run.stderr


def test_link_faults_fail_over_and_fail_when_all_members_are_down(lab_up):
    node = "DRM-3060-G4-1-1"
    invoke("lab.link-down", node, "eth2")
    try:
        assert re.search(r"member eth2: disabled", sh("ovs-appctl bond/show bond0"))
        status = json.loads(invoke("lab.status", "--json", expect=1).stdout)
        bond = next(o for o in status["objects"] if o["name"] == "bond0")
        assert not bond["healthy"] and bond["detail"] == "eth2 link down"
        invoke("lab.verify")  # one member down: the bond fails over, traffic flows
        invoke("lab.link-down", node, "eth3", "--side", "tor")  # the switch port facing eth3 shuts too
        run = invoke("lab.verify", "--timeout", "30", expect=1)
        assert f"{CVM} cannot reach gw0 (10.59.30.1)" in run.stderr
    finally:
        invoke("lab.link-up", node, "eth2")
        invoke("lab.link-up", node, "eth3", "--side", "tor")
    run = invoke("lab.link-down", node, "eth2", "--flap", "2", "--interval", "0.5")
    assert run.stderr.count("eth2 is down") == 2 and run.stderr.count("eth2 is up") == 2
    invoke("lab.verify")
    assert "has no uplink 'eth9'" in invoke("lab.link-down", node, "eth9", expect=1).stderr


def test_down_works_from_marks_alone_and_leaves_nothing(lab_up, foreign):
    shutil.rmtree(f"/run/labkit/{LAB}")  # no state file: down still finds everything
    invoke("lab.down")
    assert labkit_leftovers(LAB) == []
    assert "nothing of it is on this host" in invoke("lab.down").stderr


def test_foreign_objects_and_the_root_namespace_are_untouched(lab_up, foreign):
    invoke("lab.down")
    assert "lkfrgn-br" in sh("ovs-vsctl list-br").split()
    assert "labkit-test-foreign" in sh("virsh -c qemu:///system net-list --all --name").split()
    assert "default" in sh("virsh -c qemu:///system net-list --all --name").split()
    assert "lkfrgn-ns" in sh("ip netns list")
    assert sh("ip -br link show lkfrgn-a")
    assert root_namespace() == foreign


def test_a_foreign_object_holding_a_lab_name_is_left_alone(foreign):
    """Something not the lab's holds a name the lab would give its own port: the lab takes another
    (salted) name, and neither lab.up nor lab.down touches the foreign port."""
    sh("ovs-vsctl add-port lkfrgn-br seed-n1-host -- set Interface seed-n1-host type=internal")
    try:
        invoke("lab.up", "--no-verify")
        assert "seed-n1-host" in sh("ovs-vsctl list-ports lkfrgn-br").split()
        assert "seed-n1-host" not in sh("ovs-vsctl list-ports br0").split()
        invoke("lab.down")
        assert labkit_leftovers(LAB) == [] and "seed-n1-host" in sh("ovs-vsctl list-ports lkfrgn-br").split()
    finally:
        sh("ovs-vsctl --if-exists del-port lkfrgn-br seed-n1-host")
