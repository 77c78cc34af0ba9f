"""acli on the control plane, in memory: every command's output (golden), its errors, completion.

The in-memory session applies a change by keeping its topology: these tests check what acli
decides and prints; tests/integration/test_acli.py runs the same commands on a real lab.
"""

from __future__ import annotations

import contextlib
import json

import pytest

from labkit import acli, control, ledger, model, nic_identity, state, topology
from labkit.control import Control
from labkit.errors import LabkitError

from ..conftest import REPO

GOLDEN = REPO / "tests" / "golden" / "acli"
TRAINING = REPO / "tests" / "topologies" / "training.yaml"


class MemorySession:
    """A lab's effective state in memory, changed as the live session changes it (IPAM's ledger,
    the records' logical timestamps), without a host."""

    lab = "training"

    def __init__(self, topo):
        self.state = control.after(None, nic_identity.pin(topo), ledger.assign(nic_identity.pin(topo)).ledger)

    @property
    def topo(self):
        return self.state.topo

    def control(self) -> Control:
        return self.state

    @contextlib.contextmanager
    def controlled(self):
        yield self.state

    def apply(self, change):
        pinned = nic_identity.pin(change.topo, self.state.topo)
        self.state = control.after(self.state, pinned, ledger.assign(pinned, self.state.ledger).ledger)

    def act(self, action):
        self.acted = [*getattr(self, "acted", []), (action.verb, action.vms)]


SESSION = [
    "net.list",
    "net.create web vlan=50 ip_config=10.50.0.1/24",
    "net.add_dhcp_pool web start=10.50.0.100 end=10.50.0.102",
    "net.update_dhcp_dns web servers=10.50.0.53,10.50.0.54 domains=lab.local,corp.local",
    "net.create app vlan=60 vswitch_name=br0",
    "net.list",
    "net.get web",
    "net.get app",
    "vm.create web1 memory=256M num_vcpus=2",
    "vm.create web2",
    "vm.nic_create web1 network=web",
    "vm.nic_create web2 network=web ip=10.50.0.20",
    "vm.nic_create web2 network=app vlan_mode=kTrunked trunked_networks=70,80",
    "vm.on web*",
    "vm.list",
    "vm.get web1",
    "vm.nic_get web2",
    "net.list_vms web",
    "net.list_vms app",
    "host.list",
    "vm.off web2",
    "vm.get web2",
]


def run(session, line):
    lines = []
    try:
        out = acli.execute(session, line, say=lines.append)
        lines += out.text
    except LabkitError as exc:
        lines.append(f"ERROR: {exc}")
    return lines


def refusals(session, lines) -> list[str]:
    """Each line refused in one ERROR line, the lab as it was: the transcript of them."""
    transcript = ["# refusals: one line each, and the lab as it was"]
    for line in lines:
        before = session.topo
        out = run(session, line)
        assert len(out) == 1 and out[0].startswith("ERROR: "), (line, out)
        assert session.topo == before, line
        transcript += [f"<acropolis> {line}", *out]
    return transcript


def test_a_training_session_prints_as_ahv_does(golden):
    session = MemorySession(topology.load(str(TRAINING)))
    transcript = []
    for line in SESSION:
        transcript += [f"<acropolis> {line}", *run(session, line)]
    golden(GOLDEN / "session.txt", "\n".join(transcript) + "\n")
    # the lab resolves: every NIC its MAC and address, the new VLANs on the switch, the domains as asked
    lab = model.resolve(session.topo)
    web1 = next(d for d in lab.domains if d.hostname == "web1")
    assert web1.nics[0].addresses == ("10.50.0.100/24",) and web1.nics[0].dhcp and web1.nics[0].tag == 50
    web2 = next(d for d in lab.domains if d.hostname == "web2")
    assert not web2.power_on and web2.nics[1].native == 60 and web2.nics[1].trunks == (60, 70, 80)
    assert {0, 50, 60, 70, 80} <= set(session.topo.switch.vlans)


LIFECYCLE = [
    "net.create web vlan=50 ip_config=10.50.0.1/24 dhcp_address=10.50.0.250",
    "net.add_dhcp_pool web start=10.50.0.100 end=10.50.0.109",
    "net.add_dhcp_pool web start=10.50.0.200 end=10.50.0.209",
    "net.update_dhcp_dns web servers=10.50.0.53 domains=lab.local",
    "vm.create SQL_User05 memory=256M num_vcpus=2 num_cores_per_vcpu=2 uefi_boot=true ha_priority=100",
    "vm.create 'web server 1' memory=128M",
    "vm.create web[1..3]",
    "vm.create test[008..010] num_vcpus=1",
    "vm.nic_create SQL_User05 network=web",
    "vm.nic_list SQL_User05",
    "vm.clone clone[1..2] clone_from_vm=SQL_User05",
    "vm.update web1 memory=192M num_vcpus=2 num_cores_per_vcpu=2",
    "vm.update web2 name=web-two",
    "vm.get clone1",
    "vm.on SQL_User05",
    "vm.on clone*",
    "vm.list power_state=on",
    "vm.list power_state=off",
    "vm.shutdown clone1",
    "vm.reboot SQL_User05",
    "vm.reset SQL_User05",
    "vm.power_cycle SQL_User05",
    "vm.pause clone2",
    "vm.resume clone2",
    "host.list",
    "host.get node1",
    "host.list_vms node1",
    "net.list_virtual_switch",
    "net.get_virtual_switch vs0",
    "net.del_dhcp_pool web start=10.50.0.200 end=10.50.0.209",
    "net.clear_dhcp_dns web",
    "net.create app vlan=60",
    "net.update app vlan=61",
    "net.get web",
    "vm.delete test* delete_snapshots=true",
    "vm.list",
]


def test_the_whole_vm_lifecycle_prints_as_ahv_does(golden):
    session = MemorySession(topology.load(str(TRAINING)))
    transcript = []
    for line in LIFECYCLE:
        transcript += [f"<acropolis> {line}", *run(session, line)]
    golden(GOLDEN / "lifecycle.txt", "\n".join(transcript) + "\n")
    vms = {vm.name: vm for vm in session.topo.vms}
    assert vms["SQL_User05"].cores_per_vcpu == 2 and vms["clone1"].cores_per_vcpu == 2
    assert "web-two" in vms and "web2" not in vms
    assert session.acted == [("shutdown", ("clone1",)), ("reboot", ("SQL_User05",)), ("reset", ("SQL_User05",)),
                             ("power_cycle", ("SQL_User05",)), ("pause", ("clone2",)), ("resume", ("clone2",))]
    assert vms["clone1"].power == "off"  # the shutdown recorded it powered off
    lab = model.resolve(session.topo)
    sql = next(d for d in lab.domains if d.ahv_name == "SQL_User05")
    assert (sql.name, sql.hostname, sql.vcpus, sql.cores) == ("SQL_User05", "SQL-User05", 4, 2)
    spaced = next(d for d in lab.domains if d.ahv_name == "web server 1")
    assert spaced.name.startswith("web-server-1-") and spaced.hostname == "web-server-1"


ERRORS = [
    ("net.create web vlan=50 dhcp_adress=10.50.0.9", "Unknown keyword argument: dhcp_adress; did you mean dhcp_address?"),
    ("net.create other vlan=51 dhcp_address=10.51.0.9", "dhcp_address= needs ip_config= (a managed network); add ip_config=GW/PREFIX"),
    ("vm.create web9 foo=1", "Unknown keyword argument: foo"),
    ("vm.nic_create web1 network=vlan0 ip=10.59.30.9", "Cannot assign IP address on an unmanaged network"),
    ("vm.nic_create web1 network=vlan0 request_ip=true", "Cannot assign IP address on an unmanaged network"),
    ("vm.nic_create web1 network=web ip=10.50.0.100", "10.50.0.100 is already assigned in network web; request another or leave ip= out"),
    ("vm.nic_create web1 network=web ip=10.60.0.5", "10.60.0.5 is not in network web (10.50.0.0/24); request an address inside it"),
    ("vm.nic_create web1 network=web ip=10.50.0.254", "10.50.0.254 is the gateway, the DHCP server or not a host address of web; request another"),
    ("vm.nic_create web1 network=nope", "network 'nope' does not exist; networks: vlan0, web"),
    ("net.delete web", "network web is in use by the NICs of web1 (50:6b:8d:b1:bc:6e); delete them (vm.nic_delete VM MAC) first"),
    ("net.create web vlan=51", "network web already exists; choose another name or net.delete it first"),
    ("net.create other vlan=50", "network web already carries VLAN 50 on br0; use it or another VLAN"),
    ("net.create other vlan=51 ip_config=10.51.0.0/24", "ip_config=10.51.0.0/24 is not a gateway with a prefix; write it like 10.50.0.1/24"),
    ("net.create other vlan=5000", "vlan=5000 is not a number from 0 to 4094"),
    ("net.create other vlan=51 vswitch_name=br7", "net.create would make the lab invalid: networks[2].bridge: bridge 'br7' does not exist on node node1; did you mean 'br0'? defined: br0"),
    ("net.add_dhcp_pool vlan0 start=10.59.30.100 end=10.59.30.110", "network vlan0 is not managed (no ip_config); a DHCP pool needs a managed network"),
    ("net.add_dhcp_pool web start=10.50.0.1 end=10.50.0.9", "net.add_dhcp_pool would make the lab invalid: networks[1].ip_config.pool[1]: range '10.50.0.1 10.50.0.9' contains the gateway 10.50.0.1; leave the gateway out of the pool"),
    ("vm.on nothing*", "no VM matches 'nothing*'; VMs: web1"),
    ("vm.create web1", "VM web1 already exists; choose another name or vm.delete it first"),
    ("vm.create web9 memory=lots", "memory=lots is not a size; write it like 128M or 2G"),
    ("vm.nic_delete web1 50:6b:8d:00:00:01", "VM web1 has no NIC with MAC 50:6b:8d:00:00:01; its NICs: 50:6b:8d:b1:bc:6e"),
    ("vm.nic_update web1 50:6b:8d:b1:bc:6e vlan_mode=kTrunked trunked_networks=70",
     "changing vlan_mode or trunked_networks needs update_vlan_trunk_info=true"),
    ("vm.nic_create web1 network=web trunked_networks=70", "trunked_networks= needs vlan_mode=kTrunked"),
    ("vm.nic_create web1 network=web model=e1000", "lab NICs are virtio and connected; leave model= and connected= out"),
    ("vm.delete", "usage: vm.delete VM"),
    ("vm.list extra", "usage: vm.list [power_state=]"),
    ("vm.start web1", "Unknown command: vm.start; did you mean vm.on?"),
    ("vm.lst", "Unknown command: vm.lst; did you mean vm.list or vm.reset or vm.nic_list?"),
    ("frobnicate", "Unknown command: frobnicate; help lists the commands"),
    ("net.create 'web", "cannot read the command line (No closing quotation); check the quotes"),
    ("vm.create web9 uefi_bot=true", "Unknown keyword argument: uefi_bot; did you mean uefi_boot?"),
    ("vm.create web[5..1]", "web[5..1]: a range counts up, 1000 names at most (web[1..5], testVM[000..099])"),
    ("vm.clone web9", "vm.clone needs clone_from_vm=; usage: vm.clone NAME clone_from_vm="),
    ("vm.clone web9 clone_from_vm=nothing", "no VM matches 'nothing'; VMs: web1"),
    ("vm.clone web1 clone_from_vm=web1", "VM web1 already exists; choose another name or vm.delete it first"),
    ("vm.update web1", "vm.update needs something to change: memory=, num_vcpus=, num_cores_per_vcpu=, name= or uefi_boot="),
    ("vm.update web1 num_cores_per_vcpu=0", "num_cores_per_vcpu=0 is not a number from 1 to 256"),
    ("vm.create 'bad\tname'", "the command line holds the control character '\\t'; type printable characters only"),
    ("vm.shutdown web1", "vm.shutdown: web1 is powered off"),
    ("vm.list power_state=maybe", "power_state=maybe is not on or off"),
    ("host.get node9", "host node9 does not exist; hosts: node1"),
    ("net.get_virtual_switch vs9", "virtual switch vs9 does not exist; virtual switches: vs0"),
    ("net.del_dhcp_pool web start=10.50.0.1 end=10.50.0.2", "network web has no pool 10.50.0.1-10.50.0.2; its pools: 10.50.0.100-10.50.0.101"),
    ("net.update web vlan=0", "network vlan0 already carries VLAN 0 on br0; use another VLAN"),
]


@pytest.fixture
def web_lab():
    session = MemorySession(topology.load(str(TRAINING)))
    for line in ("net.create web vlan=50 ip_config=10.50.0.1/24", "net.add_dhcp_pool web start=10.50.0.100 end=10.50.0.101",
                 "vm.create web1", "vm.nic_create web1 network=web"):
        acli.execute(session, line, say=lambda _m: None)
    return session


@pytest.mark.parametrize("line, message", ERRORS, ids=[e[0] for e in ERRORS])
def test_mistakes_are_one_line_and_change_nothing(web_lab, line, message):
    before = web_lab.topo
    with pytest.raises(LabkitError) as err:
        acli.execute(web_lab, line, say=lambda _m: pytest.fail("a refused command announced a task"))
    assert str(err.value) == message
    assert web_lab.topo == before


def test_an_exhausted_pool_is_a_clear_error_and_a_deleted_nic_returns_its_address(web_lab):
    acli.execute(web_lab, "vm.create web2", say=lambda _m: None)
    acli.execute(web_lab, "vm.nic_create web2 network=web", say=lambda _m: None)  # the pool's last address
    with pytest.raises(LabkitError, match=r"^the DHCP pool of network web is exhausted \(2 addresses, all assigned\)"):
        acli.execute(web_lab, "vm.nic_create web2 network=web", say=lambda _m: None)
    mac = web_lab.control().vm("web1").nics[0].mac
    acli.execute(web_lab, f"vm.nic_delete web1 {mac}", say=lambda _m: None)
    acli.execute(web_lab, "vm.nic_create web2 network=web", say=lambda _m: None)
    assert [n.ip for n in web_lab.control().vm("web2").nics] == ["10.50.0.101", "10.50.0.100"]
    # a requested address outside the pool (inside the subnet) does not use the pool
    acli.execute(web_lab, "vm.nic_create web1 network=web ip=10.50.0.7", say=lambda _m: None)
    assert web_lab.control().network("web").v2()["ip_config"]["pool"][0]["num_free_ips"] == 0


def test_a_nic_keeps_its_mac_and_address_when_the_nics_before_it_go(web_lab):
    acli.execute(web_lab, "net.add_dhcp_pool web start=10.50.0.110 end=10.50.0.119", say=lambda _m: None)
    acli.execute(web_lab, "vm.nic_create web1 network=web", say=lambda _m: None)
    first, second = web_lab.control().vm("web1").nics
    acli.execute(web_lab, f"vm.nic_delete web1 {first.mac}", say=lambda _m: None)
    (left,) = web_lab.control().vm("web1").nics
    assert (left.mac, left.ip) == (second.mac, second.ip)


def test_nic_update_moves_trunks_and_back(web_lab):
    mac = web_lab.control().vm("web1").nics[0].mac
    acli.execute(web_lab, f"vm.nic_update web1 {mac} vlan_mode=kTrunked trunked_networks=70,71 update_vlan_trunk_info=true",
                 say=lambda _m: None)
    nic = web_lab.control().nic("web1", mac)
    assert (nic.vlan_mode, nic.trunked_networks, nic.ip) == ("kTrunked", (70, 71), "10.50.0.100")
    acli.execute(web_lab, f"vm.nic_update web1 {mac} vlan_mode=kAccess update_vlan_trunk_info=true", say=lambda _m: None)
    acli.execute(web_lab, f"vm.nic_update web1 {mac} network=vlan0", say=lambda _m: None)
    nic = web_lab.control().nic("web1", mac)
    assert (nic.vlan_mode, nic.network, nic.ip) == ("kAccess", "vlan0", None)
    assert web_lab.control().network("web").v2()["ip_config"]["pool"][0]["num_free_ips"] == 2  # returned


def test_deletes_ask_first_unless_told_yes(web_lab):
    asked = []
    out = acli.execute(web_lab, "vm.delete web*", confirm=lambda q: asked.append(q) or False, say=lambda _m: None)
    assert asked == ["Delete 1 VMs? (yes/no) "] and out.text == ["vm.delete: not confirmed, nothing deleted"]
    assert web_lab.control().vms() != []
    out = acli.execute(web_lab, "vm.delete web*", confirm=lambda q: True, say=lambda _m: None)
    assert out.text == ["web1: complete"] and web_lab.control().vms() == []
    assert web_lab.control().network("web").v2()["ip_config"]["pool"][0]["num_free_ips"] == 2


def test_the_question_is_asked_without_the_lab_s_lock_and_a_change_meanwhile_deletes_nothing(web_lab):
    held = []

    @contextlib.contextmanager
    def controlled():
        held.append(True)
        try:
            yield web_lab.control()
        finally:
            held.pop()

    web_lab.controlled = controlled

    def answer(_question):
        assert not held  # other commands on the lab need not wait for the operator
        acli.execute(web_lab, "vm.create web9 num_vcpus=1 memory=128M", say=lambda _m: None)  # meanwhile
        return True

    with pytest.raises(acli.AcliError, match="the lab changed while you were asked .*nothing deleted"):
        acli.execute(web_lab, "vm.delete web*", confirm=answer, say=lambda _m: None)
    assert {vm.name for vm in web_lab.control().vms()} == {"web1", "web9"}


def test_json_output_has_data_error_and_status(web_lab):
    out = json.loads(acli.as_json(acli.execute(web_lab, "net.list"), None))
    assert out["status"] == 0 and out["error"] is None
    web = next(n for n in out["data"] if n["name"] == "web")
    assert web["vlan_id"] == 50 and web["ip_config"]["dhcp_server_address"] == "10.50.0.254"
    assert web["ip_config"]["pool"] == [{"range": "10.50.0.100 10.50.0.101", "num_free_ips": 1, "num_total_ips": 2}]
    assert json.loads(acli.as_json(None, "boom")) == {"data": None, "error": "boom", "status": 1}


def test_tab_completes_commands_keywords_and_names(web_lab):
    ctl = web_lab.control()
    assert acli.complete("", "net.l", ctl) == ["net.list ", "net.list_virtual_switch ", "net.list_vms "]
    assert acli.complete("vm.on ", "w", ctl) == ["web1 "]
    assert acli.complete("vm.nic_create web1 ", "", ctl)[:3] == ["network=", "ip=", "request_ip="]
    assert acli.complete("vm.nic_create web1 network=", "w", ctl) == ["web"]
    assert acli.complete("vm.nic_create web1 network=web ", "vlan", ctl) == ["vlan_mode="]
    assert acli.complete("vm.nic_delete web1 ", "50", ctl) == [ctl.vm("web1").nics[0].mac + " "]
    assert acli.complete("net.get ", "", ctl) == ["vlan0 ", "web "]


def test_the_saved_topology_brings_up_the_same_lab(web_lab, tmp_path, monkeypatch):
    """The effective state parses back to the same lab, and lab.export writes it with every address."""
    from labkit import commands

    monkeypatch.setattr(state, "RUN_DIR", tmp_path)
    monkeypatch.setattr(state, "lab_dir", lambda lab: tmp_path / lab)
    ctl = web_lab.control()
    state.save_effective("training", state.Effective(state.topology_yaml("training", ctl.topo).encode(),
                                                     ctl.ledger.to_json().encode(), b"{}"))
    again = commands.control_of("training")
    assert again.vm("web1").nics == ctl.vm("web1").nics
    exported = topology.parse(commands.export("training"), "exported.yaml")
    assert model.resolve(exported) == model.resolve(ctl.topo)
    assert exported.vms[0].nics[0].ip is not None  # the binding, written out


def test_net_delete_takes_the_gateway_net_create_put_on_the_switch(web_lab):
    """net.create web ip_config=10.50.0.1/24 added VLAN 50's gateway to the switch; deleting the
    network (its NICs first) takes it away again, leaving other VLANs' gateways alone."""
    assert 50 in web_lab.topo.switch.gateways
    mac = web_lab.control().vm("web1").nics[0].mac
    acli.execute(web_lab, f"vm.nic_delete web1 {mac}", say=lambda _m: None)
    acli.execute(web_lab, "net.delete web", say=lambda _m: None)
    assert 50 not in web_lab.topo.switch.gateways and 0 in web_lab.topo.switch.gateways


def test_json_output_on_a_terminal_asks_on_stderr(web_lab, monkeypatch, capsys):
    """acli -o json on a terminal: the delete question goes to stderr, stdout holds the JSON alone."""
    from labkit import acli_shell

    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda *prompt: "yes")
    assert acli_shell.run_one(web_lab, "vm.delete web1", as_json=True, yes=False) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["status"] == 0 and "Delete 1 VMs? (yes/no)" in err
