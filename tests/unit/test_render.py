"""Rendered libvirt XML: golden files per topology and profile, libvirt's RNG schemas, libvirt's test driver."""

from __future__ import annotations


import libvirt
import pytest
from lxml import etree

from labkit import names, pipeline, render, schema
from labkit.hoststate import HostState

from ..conftest import REPO

TOPOLOGIES = {"default": None} | {p.stem: p for p in sorted((REPO / "examples").glob("*.yaml"))}
PROFILES = ["lab", "fidelity"]


def docs_for(name: str, profile: str, adapt=render.Adaptation.ahv()) -> dict[str, str]:
    topo = pipeline.load(TOPOLOGIES[name] and str(TOPOLOGIES[name]), profile)
    return pipeline.desire(topo, HostState(), adapt).docs


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("topology", sorted(TOPOLOGIES))
def test_golden_xml(topology, profile, golden):
    for name, xml in docs_for(topology, profile).items():
        golden(REPO / "tests/golden/xml" / topology / profile / f"{name}.xml", xml)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("topology", sorted(TOPOLOGIES))
def test_schema_valid(topology, profile):
    for adapt in (render.Adaptation.ahv(), render.Adaptation(domain_type="qemu", cpu_passthrough=False,
                                                              locked_memory=False, passthrough=False, tb_cache_mib=32)):
        for name, xml in docs_for(topology, profile, adapt).items():
            assert schema.problems(xml) == [], name


@pytest.mark.parametrize("topology", sorted(TOPOLOGIES))
def test_libvirt_test_driver_accepts_every_document(topology):
    conn = libvirt.open("test:///default")
    try:
        for name, xml in docs_for(topology, "fidelity").items():
            if xml.startswith("<domain"):
                assert conn.defineXML(xml).name() == name
            else:
                assert conn.networkDefineXML(xml).name() == name
    finally:
        conn.close()


def _cvm(xml_docs: dict[str, str]) -> etree._Element:
    return etree.fromstring(next(x for n, x in xml_docs.items() if n.endswith("-CVM")).encode())


def test_fidelity_cvm_has_every_stanza_of_the_seed():
    cvm = _cvm(docs_for("default", "fidelity"))
    assert cvm.get("type") == "kvm"
    assert cvm.findtext("name") == "NTNX-DRM-3060-G4-1-1-CVM"
    assert cvm.findtext("memory") == "25165824" and cvm.find("memory").get("unit") == "KiB"
    assert cvm.find("memoryBacking/nosharepages") is not None and cvm.find("memoryBacking/locked") is not None
    assert cvm.findtext("vcpu") == "8"
    assert cvm.find("cpu").get("mode") == "host-passthrough"
    nic1, nic2 = cvm.findall("devices/interface")
    assert nic1.get("type") == "bridge" and nic1.find("source").get("bridge") == "br0"
    assert nic1.find("virtualport").get("type") == "openvswitch"
    assert nic1.find("virtualport/parameters").get("interfaceid")
    assert nic2.get("type") == "network" and nic2.find("source").get("network") == "NTNX-Local-Network"
    assert {n.find("model").get("type") for n in (nic1, nic2)} == {"virtio"}
    assert cvm.find("devices/serial").get("type") == "file"
    assert cvm.find("devices/graphics").get("type") == "vnc" and cvm.find("devices/graphics").get("listen") == "127.0.0.1"
    assert cvm.find("devices/video/model").get("type") == "cirrus"
    hostdev = cvm.find("devices/hostdev")
    assert (hostdev.get("mode"), hostdev.get("type"), hostdev.get("managed")) == ("subsystem", "pci", "yes")
    assert hostdev.find("rom").get("bar") == "off"
    assert hostdev.find("source/address").get("bus") == "0x01"
    assert cvm.find("devices/memballoon").get("model") == "virtio"


def test_lab_profile_fits_a_laptop():
    cvm = _cvm(docs_for("default", "lab"))
    # README's promise, written out: the lab profile's CVM has 256 MiB and one vCPU
    assert int(cvm.findtext("memory")) == 256 * 1024 and cvm.findtext("vcpu") == "1"


def test_user_vm_nic_has_vlan_and_tap():
    uvm = etree.fromstring(docs_for("default", "lab")["uvm32"].encode())
    nic = uvm.find("devices/interface")
    assert [t.get("id") for t in nic.findall("vlan/tag")] == ["32"]
    assert nic.find("target").get("dev").startswith("tap")


def test_host_adaptation_drops_what_the_host_cannot_run_and_says_so():
    adapt = render.Adaptation(domain_type="qemu", cpu_passthrough=False, locked_memory=False, passthrough=False)
    topo = pipeline.load(None)
    desired = pipeline.desire(topo, HostState(), adapt)
    cvm = _cvm(desired.docs)
    assert cvm.get("type") == "qemu"
    assert cvm.find("memoryBacking/locked") is None and cvm.find("devices/hostdev") is None
    assert cvm.find("memoryBacking/nosharepages") is not None
    said = "\n".join(map(str, desired.deviations))
    assert "no <locked/>" in said and "no <hostdev>" in said and "TCG" in said
    local = etree.fromstring(desired.docs["NTNX-Local-Network"].encode())
    assert local.find("ip") is None, "an <ip> would put 192.168.5.1 in the workstation's namespace"


def test_lean_guests_on_tcg_get_a_small_translation_cache_no_boot_roms_and_give_memory_back():
    adapt = render.Adaptation(domain_type="qemu", cpu_passthrough=False, locked_memory=False, passthrough=False,
                              tb_cache_mib=32)
    desired = pipeline.desire(pipeline.load(None), HostState(), adapt)
    for name in ("uvm32", "NTNX-DRM-3060-G4-1-1-CVM"):
        dom = etree.fromstring(desired.docs[name].encode())
        cache = dom.find("features/tcg/tb-cache")
        assert (cache.get("unit"), cache.text) == ("MiB", "32"), name
        assert dom.find("devices/memballoon").get("freePageReporting") == "on"
        assert [rom.get("enabled") for rom in dom.findall("devices/interface/rom")] == ["no"] * len(dom.findall("devices/interface"))
        assert dom.find("devices/channel/source").get("path") == f"/run/labkit/seed/agents/{name}.sock"
    ahv = etree.fromstring(docs_for("default", "lab")["uvm32"].encode())
    assert ahv.find("features/tcg") is None and ahv.find("devices/interface/rom") is None
    assert ahv.find("devices/memballoon").get("freePageReporting") is None


def test_documents_are_marked_as_the_labs():
    for xml in docs_for("default", "lab").values():
        meta = names.metadata_of(xml)
        assert meta["name"] == "seed" and len(meta["digest"]) == 16


def test_a_new_guest_image_changes_the_built_in_guests_definitions():
    """Adaptation.guest_image: the domains name the image they boot, so a rebuilt image (new guest
    programs) is a changed definition, and lab.up restarts them on it."""
    from dataclasses import replace

    lab = pipeline.desire(pipeline.load(None), HostState(), render.Adaptation()).lab
    old = render.render_all(lab, replace(render.Adaptation(), guest_image="0bd12eeee91ec700"))
    new = render.render_all(lab, replace(render.Adaptation(), guest_image="5f0c1a2b3c4d5e6f"))
    for dom in lab.domains:
        assert "labkit.image=0bd12eeee91ec700" in old[dom.name] and old[dom.name] != new[dom.name]
        assert names.metadata_of(old[dom.name])["digest"] != names.metadata_of(new[dom.name])["digest"]
