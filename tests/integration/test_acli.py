"""acli on a real lab, as a trainee uses it: a managed network with a pool, a VM and its NIC made
in the shell, powered on; the guest takes its pool address by DHCP; ovs-vsctl and virsh show the
same objects; lab.export brings up the same lab. Tests run in file order against one lab."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

from ..conftest import REPO
from .conftest import Terminal, invoke, labkit_leftovers, sh

LAB = "training"
TOPOLOGY = str(REPO / "tests/topologies/training.yaml")


@pytest.fixture(scope="module")
def lab():
    invoke("lab.down", "--lab", LAB)  # what an earlier, killed run left
    invoke("lab.up", "--topology", TOPOLOGY)
    yield
    invoke("lab.down", "--lab", LAB)
    assert labkit_leftovers(LAB) == []


def acli(line: str, expect: int = 0) -> str:
    return invoke("acli", "--lab", LAB, "-c", line, expect=expect).stdout


def acli_json(line: str, expect: int = 0) -> dict:
    return json.loads(invoke("acli", "--lab", LAB, "-o", "json", "-c", line, expect=expect).stdout)


def port_of(mac: str) -> dict:
    """The OVS port of the VM NIC with this MAC: name, tag, trunks, vlan_mode."""
    rows = json.loads(sh("ovs-vsctl --format=json --columns=name,mac_in_use,external_ids list Interface"))["data"]
    iface = next(name for name, _, ext in rows if ["attached-mac", mac] in ext[1])
    port = json.loads(sh(f"ovs-vsctl --format=json --columns=tag,trunks,vlan_mode list Port {iface}"))
    tag, trunks, mode = port["data"][0]
    plain = lambda v: v if not isinstance(v, list) else (v[1] if v[0] == "set" else v)  # noqa: E731
    return {"name": iface, "tag": plain(tag), "trunks": plain(trunks), "vlan_mode": plain(mode)}


def test_a_managed_network_and_a_vm_made_in_the_shell(lab):
    for line in ("net.create web vlan=50 ip_config=10.50.0.1/24",
                 "net.add_dhcp_pool web start=10.50.0.100 end=10.50.0.120",
                 "net.update_dhcp_dns web servers=10.50.0.53 domains=lab.local",
                 "vm.create web1 memory=128M num_vcpus=1",
                 "vm.nic_create web1 network=web",
                 "vm.on web*"):
        out = acli(line)
        assert out.splitlines()[-1].endswith(": complete"), (line, out)
    assert "10.50.0.100" in acli("net.list_vms web")
    assert re.search(r"^  state: \"kOn\"$", acli("vm.get web1"), re.M)


def test_the_guest_takes_its_pool_address_by_dhcp(lab):
    verify = invoke("lab.verify", "--lab", LAB, "--json").stdout
    dhcp = json.loads(verify)["dhcp"]
    assert {"from": "web1", "check": "lease", "ok": True} in [{k: d[k] for k in ("from", "check", "ok")} for d in dhcp], dhcp
    lease = invoke("lab.console", "web1", "--lab", LAB, "--cmd", "cat /run/dhcp.eth0").stdout
    assert "ip=10.50.0.100/24" in lease and "server=10.50.0.254" in lease and "search=lab.local" in lease, lease
    assert "inet 10.50.0.100/24" in invoke("lab.console", "web1", "--lab", LAB, "--cmd", "ip -4 addr show eth0").stdout


def test_ovs_and_virsh_show_what_the_shell_made(lab):
    mac = re.search(r'mac_addr: "([0-9a-f:]+)"', acli("vm.nic_get web1")).group(1)
    assert mac.startswith("50:6b:8d:")
    assert port_of(mac)["tag"] == 50
    assert re.search(r"<portgroup name='web'>\s*<vlan>\s*<tag id='50'/>", sh("virsh -c qemu:///system net-dumpxml VM-Network"))
    assert "web1" in sh("virsh -c qemu:///system list --name")


def test_a_trunked_nic_shows_its_vlans_on_the_port(lab):
    acli("vm.nic_create web1 network=web vlan_mode=kTrunked trunked_networks=60,70")
    nics = acli_json("vm.nic_get web1")["data"]
    trunk = next(n for n in nics if n["vlan_mode"] == "kTrunked")
    assert trunk["trunked_networks"] == [60, 70]
    port = port_of(trunk["mac_address"])
    assert (port["tag"], port["trunks"], port["vlan_mode"]) == (50, [50, 60, 70], "native-untagged"), port
    acli(f"vm.nic_update web1 {trunk['mac_address']} vlan_mode=kAccess update_vlan_trunk_info=true")
    port = port_of(trunk["mac_address"])
    assert (port["tag"], port["trunks"], port["vlan_mode"]) == (50, [], []), port
    acli(f"vm.nic_delete web1 {trunk['mac_address']}")


def in_cvm(command: str, expect: int = 0) -> str:
    return invoke("lab.console", "cvm", "--lab", LAB, "--cmd", command, expect=expect).stdout


def test_acli_in_the_cvm_answers_as_the_workstation_s(lab):
    """acli in the CVM's shell: the same lab, parser, output and errors as `invoke acli`."""
    assert in_cvm("acli net.list") == acli("net.list")
    assert json.loads(in_cvm("acli -o json vm.list")) == acli_json("vm.list")
    assert in_cvm("acli vm.get web1 colour=blue", expect=1) == acli("vm.get web1 colour=blue", expect=1)
    in_cvm("acli vm.create 'From CVM' memory=64M")  # a name with a space, quoted as in the CVM's shell
    assert "From CVM" in acli("vm.list")
    assert in_cvm("acli -y vm.delete 'From CVM'").splitlines()[-1] == "From CVM: complete"
    assert "From CVM" not in acli("vm.list")


def test_acli_typed_at_the_cvm_s_console_prompts_and_asks_before_deleting(lab):
    term = Terminal("lab.console", "cvm", "--lab", LAB)
    term.read_until(b"Ctrl-] leaves")
    term.write(b"\r")
    term.read_until(b"# ")
    term.settle()
    start = len(term.seen)
    term.write(b"acli net.list; echo lk-$((6*7))\r")
    term.read_until(b"lk-42\r\n")
    shown = term.seen[start:].decode(errors="replace").replace("\r\n", "\n").split("\n")
    assert "\n".join(shown[1:shown.index("lk-42")]) + "\n" == acli("net.list")  # after the echoed command

    def typed(line: bytes, *markers: bytes) -> None:
        since = len(term.seen)
        term.write(line + b"\r")
        for marker in markers:
            term.read_until(marker, since=since)

    # Waited for: what each line prints, not the prompt after it: the guest's serial port may hold
    # the last few bytes it was given until it is given more (typing ahead is safe: the tty keeps it).
    typed(b"acli", b"<acrop")
    typed(b"vm.create cvm1 memory=64M", b"cvm1: complete")
    typed(b"vm.delete cvm1", b"Delete 1 VMs?")
    typed(b"no", b"not confirmed, nothing deleted")
    assert "cvm1" in acli("vm.list")
    typed(b"vm.delete cvm1", b"Delete 1 VMs?")
    typed(b"yes", b"cvm1: complete")
    term.write(b"exit\r")
    term.settle()
    term.write(b"\x1d")
    assert term.exit_status() == 0
    assert "cvm1" not in acli("vm.list")


def test_mistakes_are_one_line_exit_1_and_change_nothing(lab):
    before = sh("ovs-vsctl show") + acli("vm.get web1")
    assert acli("vm.nic_create web1 network=vlan0 ip=10.59.30.5", expect=1) == \
        "Cannot assign IP address on an unmanaged network\n"
    assert acli("vm.create web2 colour=blue", expect=1) == "Unknown keyword argument: colour\n"
    out = acli("net.delete web", expect=1)
    assert out.startswith("network web is in use by the NICs of web1 (50:6b:8d:") and out.count("\n") == 1
    assert acli_json("net.get nothing", expect=1) == {"data": None, "status": 1,
                                                     "error": "network 'nothing' does not exist; networks: vlan0, web"}
    assert sh("ovs-vsctl show") + acli("vm.get web1") == before


def test_status_sees_the_changes_and_export_brings_up_the_same_lab(lab, tmp_path):
    def status() -> str:
        out = invoke("lab.status", "--lab", LAB, "--json").stdout
        return re.sub(r"vnet\d+", "vnetN", out)  # libvirt numbers the CVM's taps anew at each start

    before = status()
    assert json.loads(before)["healthy"] and '"web1"' in before
    exported = tmp_path / "training-export.yaml"
    invoke("lab.export", "--lab", LAB, "--out", str(exported))
    assert "web1" in exported.read_text() and "50:6b:8d:" in exported.read_text()
    invoke("lab.down", "--lab", LAB)
    invoke("lab.up", "--topology", str(exported))
    assert status() == before
    assert "ip=10.50.0.100/24" in invoke("lab.console", "web1", "--lab", LAB, "--cmd", "cat /run/dhcp.eth0").stdout


def test_vm_off_and_delete_return_the_address_and_the_network_goes(lab):
    acli("vm.off web1")
    assert "web1" not in sh("virsh -c qemu:///system list --name")
    assert "powered off" in invoke("lab.status", "--lab", LAB).stdout
    acli("vm.delete web1", expect=0)  # no terminal: nothing to confirm (acli -y)
    assert "web1" not in sh("virsh -c qemu:///system list --all --name")
    assert acli_json("net.get web")["data"]["ip_config"]["pool"][0]["num_free_ips"] == 21
    acli("net.delete web")
    assert "'web'" not in sh("virsh -c qemu:///system net-dumpxml VM-Network")
    assert "web" not in acli("net.list")


def test_the_interactive_shell_prompts_completes_and_keeps_history(lab, tmp_path):
    term = Terminal("acli", "--lab", LAB, home=str(tmp_path))
    term.read_until(b"<acropolis> ")
    term.write(b"host.list_\t")  # Tab completes the command
    term.read_until(b"host.list_vms ")
    term.write(b"node1\r")
    term.read_until(b"VM name")
    term.read_until(b"<acropolis> ")
    term.write(b"vm.list nope=1\r")
    term.read_until(b"Unknown keyword argument: nope")
    term.write(b"exit\r")
    assert term.exit_status() == 0
    assert "host.list_vms" in (tmp_path / ".labkit_acli_history").read_text()


def test_the_vm_lifecycle_as_ahv_s(lab):
    """Names AHV takes, CPU topology, clones in bulk, graceful shutdown, reboot, pause, rename: on real guests."""
    out = acli("vm.create 'SQL User 05' memory=128M num_vcpus=2 num_cores_per_vcpu=2 ha_priority=100")
    assert out.startswith("not modelled in this lab: ha_priority\n") and out.endswith("SQL User 05: complete\n")
    uuid = re.search(r'^  uuid: "([0-9a-f-]+)"', acli("vm.get 'SQL User 05'"), re.M).group(1)
    domain = next(line.split()[1] for line in sh("virsh -c qemu:///system list --all --title").splitlines()[2:]
                  if line.rstrip().endswith("SQL User 05"))
    xml = sh(f"virsh -c qemu:///system dumpxml {domain}")
    assert "<vcpu placement='static'>4</vcpu>" in xml and "sockets='2' dies='1' cores='2'" in xml
    assert re.search(r"^    num_cores_per_vcpu: 2$", acli("vm.get 'SQL User 05'"), re.M)
    acli("vm.nic_create 'SQL User 05' network=vlan0")
    assert acli("vm.clone c[1..3] clone_from_vm='SQL User 05'").count("VmClone: complete") == 3
    acli("vm.on c*")
    invoke("lab.verify", "--lab", LAB)  # vm.on returns once the VMs run; this waits for their guests
    for name in ("c1", "c2", "c3"):
        assert invoke("lab.console", name, "--lab", LAB, "--cmd", "hostname").stdout.strip() == name
    cores = lambda vm: re.findall(r"^cpu cores\s*: (\d+)$", invoke(  # noqa: E731
        "lab.console", vm, "--lab", LAB, "--cmd", "cat /proc/cpuinfo").stdout, re.M)
    assert set(cores("c1")) == {"2"}  # num_cores_per_vcpu, as the guest sees it
    acli("vm.update c1 num_vcpus=1 num_cores_per_vcpu=3")  # a running VM restarts with its new topology
    invoke("lab.verify", "--lab", LAB)
    assert set(cores("c1")) == {"3"}
    console = lambda vm, cmd: subprocess.run(  # noqa: E731 - the guest's answer, or "" while it reboots
        [sys.executable, "-m", "invoke", "lab.console", vm, "--lab", LAB, "--cmd", cmd], cwd=REPO,
        capture_output=True, text=True, timeout=120).stdout.strip()
    assert console("c1", "touch /run/before-reboot && echo marked") == "marked"  # RAM: a reboot forgets it
    acli("vm.reboot c1")
    for _ in range(120):  # the guest restarts itself; its agent answers again once it is back
        if console("c1", "test -e /run/before-reboot && echo same || echo rebooted") == "rebooted":
            break
        time.sleep(0.5)
    assert console("c1", "test -e /run/before-reboot && echo same || echo rebooted") == "rebooted"
    acli("vm.pause c2")
    assert sh("virsh -c qemu:///system domstate c2").strip() == "paused"
    acli("vm.resume c2")
    assert sh("virsh -c qemu:///system domstate c2").strip() == "running"
    acli("vm.shutdown c3")
    assert sh("virsh -c qemu:///system domstate c3").strip() == "shut off"
    log = open(f"/var/log/labkit/{LAB}/c3.serial.log", errors="replace").read()
    assert re.search(r"System halted|reboot: Power down", log), log  # the guest's kernel powered itself off
    assert "c3" in acli("vm.list power_state=off") and "c3" not in acli("vm.list power_state=on")
    row = acli("host.list").splitlines()[1].split()
    assert (row[3], row[6], row[-1]) == ("AcropolisNormal", "True", "10.59.30.81")
    uuid_of = lambda vm: re.search(r'^  uuid: "([0-9a-f-]+)"', acli(f"vm.get {vm}"), re.M).group(1)  # noqa: E731
    c1 = uuid_of("c1")
    assert c1 != uuid
    acli("vm.update c1 name=c-one")
    assert uuid_of("c-one") == c1  # a rename keeps the VM: same uuid, same running domain
    assert "c-one" in sh("virsh -c qemu:///system list --name") and "c1" not in sh("virsh -c qemu:///system list --all --name")
    acli("vm.delete c*")
    acli("vm.delete 'SQL User 05'")
    assert domain not in sh("virsh -c qemu:///system list --all --name")
