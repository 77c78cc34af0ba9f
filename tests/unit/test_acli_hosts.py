"""acli's hosts on a three-node lab (golden transcript): placement, live migration, maintenance
mode and VM-host affinity as a trainee types them, every refusal leaving the lab as it was; what
the lab resolves to after a migration (the VM's NICs on the new node's bridge, same VLANs)."""

from __future__ import annotations

from labkit import model, nic_identity, topology

from ..conftest import REPO
from .test_acli import GOLDEN, MemorySession, refusals, run

THREE = REPO / "examples" / "three-nodes.yaml"


class ThreeNodes(MemorySession):
    lab = "trio"


HOSTS = [
    "host.list",
    "vm.migrate web1 host=node2",
    "host.list_vms node2",
    "vm.get web1",
    "vm.migrate web1",
    "vm.off db3",
    "host.enter_maintenance_mode_check node3",
    "host.enter_maintenance_mode node3 wait=true",
    "host.list",
    "host.list_vms node3",
    "vm.on db3",
    "host.list_vms node1",
    "vm.create big memory=200G",
    "vm.affinity_set web2 host_list=node1",
    "vm.affinity_get web2",
    "vm.get web2",
    "vm.affinity_unset web2",
    "host.exit_maintenance_mode node3",
    "host.list_vms node3",
    "host.get node3",
    "host.list",
]

ERRORS = [
    "vm.migrate web1 host=node1",
    "vm.migrate web1 host=node9",
    "vm.migrate web1 live=false",
    "vm.migrate big",
    "host.exit_maintenance_mode node1",
    "host.enter_maintenance_mode node1 wait=false",
    "vm.affinity_set web2 host_list=",
    "vm.affinity_set web2 host_list=node7",
    "host.enter_maintenance_mode nodeX",
]


def test_hosts_maintenance_and_migration_print_as_ahv_does(golden):
    topo = topology.load(str(THREE))
    topo = topo.model_copy(update={"nodes": [n.model_copy(update={"memory": 24 * 1024 + 1024}) for n in topo.nodes]})
    session = ThreeNodes(topo)
    transcript = []
    for line in HOSTS:
        transcript += [f"<acropolis> {line}", *run(session, line)]
    placed = {vm.name: vm.node for vm in session.topo.vms}
    transcript += refusals(session, ERRORS)
    transcript.append("# a new lab: a host whose VMs have nowhere to go stays out of maintenance mode")
    session = ThreeNodes(topo)  # each node has 1 GiB for VMs, 128 MiB of it used
    for line in ("vm.create big1 memory=800M", "vm.on big1", "vm.create big2 memory=800M", "vm.on big2",
                 "host.list_vms node1", "host.list_vms node2", "host.enter_maintenance_mode_check node1",
                 "host.enter_maintenance_mode node1"):
        transcript += [f"<acropolis> {line}", *run(session, line)]
    assert not next(n for n in session.topo.nodes if n.name == "node1").maintenance
    assert {vm.name: vm.node for vm in session.topo.vms}["big1"] == "node1"
    golden(GOLDEN / "hosts.txt", "\n".join(transcript) + "\n")
    # maintenance moved web3 and db3 off node3 (db3 was then powered on elsewhere); exit brought both back
    assert placed["web1"] == "node1" and placed["db3"] == placed["web3"] == "node3"
    assert all(vm.home is None for vm in session.topo.vms)

    lab = model.resolve(session.topo)
    web1 = next(d for d in lab.domains if d.ahv_name == "web1")
    bridge = next(b for b in lab.bridges if b.node == web1.node and b.ahv_name == "br0")
    assert web1.nics[0].source == bridge.name and web1.nics[0].tag == 32  # the new node's br0, the same VLAN


def test_a_migration_is_planned_live_and_changes_only_the_bridges():
    """The plan carries a running VM's move out as a live change of its NIC bridges (no restart)."""
    from labkit import livechange, render

    topo = nic_identity.pin(topology.load(str(THREE)))
    before = model.resolve(topo)
    moved = topo.model_copy(update={"vms": [v.model_copy(update={"node": "node2"}) if v.name == "web1" else v
                                            for v in topo.vms]})
    after = model.resolve(moved)
    old = render.render_all(before, render.Adaptation())["web1"]
    new = render.render_all(after, render.Adaptation())["web1"]
    live = livechange.classify(old, new)
    assert live is not None and live.node == "node2" and not live.attach and not live.detach
    assert dict(live.moves) == {after.domain("web1").nics[0].mac: after.domain("web1").nics[0].source}
    grown = moved.model_copy(update={"vms": [v.model_copy(update={"memory": 256}) if v.name == "web1" else v
                                             for v in moved.vms]})
    assert livechange.classify(old, render.render_all(model.resolve(grown), render.Adaptation())["web1"]) is None


