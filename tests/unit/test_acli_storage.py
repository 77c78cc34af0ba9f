"""acli's images and disks, as a trainee types them (golden transcripts), on the in-memory
session of test_acli: image.create from files (what each file is comes from the session's
prober, as qemu-img reads it on a real lab), vm.disk_* on a VM, a clone, and every refusal, each
leaving the lab as it was. What the lab then resolves to (volumes, domain disks) is checked too."""

from __future__ import annotations

import pytest

from labkit import acli, model, render, schema, topology
from labkit.control_storage import ImageFacts
from labkit.errors import HostError, LabkitError

from .test_acli import GOLDEN, TRAINING, MemorySession, refusals, run

FILES = {  # what qemu-img and the first sector say of each file
    "/srv/images/ubuntu.qcow2": ImageFacts("qcow2", 2 << 30, True),
    "/srv/images/data.qcow2": ImageFacts("qcow2", 64 << 20, False),
    "/srv/images/tools.iso": ImageFacts("raw", 40 << 20, False),
    "/var/cache/labkit/downloads/5e1f-drivers.iso": ImageFacts("raw", 1 << 20, False),
}
SERVED = {"http://127.0.0.1:8000/drivers.iso": "/var/cache/labkit/downloads/5e1f-drivers.iso"}  # by this workstation


class StorageSession(MemorySession):
    def probe(self, path: str, what: str):
        if path not in FILES:
            raise HostError(f"{what}: cannot read {path} (No such file or directory); give a readable file of this workstation")
        return FILES[path]

    def fetch(self, url: str, what: str) -> str:
        if url not in SERVED:
            raise HostError(f"{what}: could not download {url} ([Errno 111] Connection refused); is the server running?")
        return SERVED[url]


STORAGE = [
    "image.create ubuntu source_url=file:///srv/images/ubuntu.qcow2 container=default image_type=kDiskImage",
    "image.create tools source_url=file:///srv/images/tools.iso image_type=kIsoImage",
    "image.create data source_url=/srv/images/data.qcow2 container=default-container annotation='test data'",
    "image.list",
    "image.get ubuntu",
    "vm.create app1 memory=256M num_vcpus=1",
    "vm.disk_create app1 clone_from_image=ubuntu",
    "vm.disk_create app1 create_size=20G container=default",
    "vm.disk_create app1 cdrom=true empty=true",
    "vm.disk_create app1 cdrom=true clone_from_image=tools bus=sata",
    "vm.disk_create app1 clone_from_image=data bus=pci",
    "vm.disk_list app1",
    "vm.disk_get app1 disk_addr=scsi.1",
    "vm.disk_update app1 disk_addr=scsi.1 new_size=30G",
    "vm.disk_update app1 disk_addr=ide.0 clone_from_image=tools",
    "vm.update_boot_device app1 disk_addr=scsi.0",
    "vm.get app1",
    "vm.clone app2 clone_from_vm=app1",
    "vm.disk_list app2",
    "vm.disk_get app2",
    "vm.disk_delete app1 disk_addr=pci.0",
    "image.update data name=data-v2",
    "image.delete data-v2",
    "image.create drivers source_url=http://127.0.0.1:8000/drivers.iso image_type=kIsoImage",
    "image.list",
    "vm.disk_create app1 clone_from_vmdisk={scsi1}",
    "vm.disk_list app1",
]

ERRORS = [
    "image.create x source_url=http://10.0.0.5/x.qcow2",
    "image.create x source_url=http://127.0.0.1:8001/x.qcow2",
    "image.create x source_url=https://[::1/x.qcow2",
    "image.create x source_url=nfs://10.0.0.5/ctr/x.qcow2",
    "image.create x source_url=relative.qcow2",
    "image.create x source_url=file:///srv/images/missing.qcow2",
    "image.create ubuntu source_url=file:///srv/images/ubuntu.qcow2",
    "image.create y source_url=file:///srv/images/ubuntu.qcow2 image_type=kIsoImage",
    "image.create y source_url=file:///srv/images/ubuntu.qcow2 image_type=kBogus",
    "image.create y source_url=file:///srv/images/ubuntu.qcow2 container=nope",
    "image.create y",
    "image.get nope",
    "image.delete ubuntu",
    "vm.disk_create app1",
    "vm.disk_create app1 empty=true",
    "vm.disk_create app1 cdrom=true",
    "vm.disk_create app1 cdrom=true create_size=1G",
    "vm.disk_create app1 cdrom=true clone_from_image=ubuntu",
    "vm.disk_create app1 clone_from_image=tools",
    "vm.disk_create app1 cdrom=true empty=true bus=scsi",
    "vm.disk_create app1 create_size=lots",
    "vm.disk_create app1 create_size=0",
    "vm.disk_create app1 create_size=20G bus=floppy",
    "vm.disk_create app1 create_size=20G bus=ide index=7",
    "vm.disk_create app1 create_size=20G index=0",
    "vm.disk_create app1 clone_from_image=nope",
    "vm.disk_create app1 clone_from_image=ubuntu create_size=1G",
    "vm.disk_create app1 clone_from_image=ubuntu clone_from_vmdisk=0b1f1e5c-0000-5000-8000-000000000000",
    "vm.disk_create app1 clone_from_vmdisk=0b1f1e5c-0000-5000-8000-000000000000",
    "vm.disk_create app1 create_size=1G container=other-container",
    "vm.disk_create app1 create_size=1G scsi_bus=1",
    "vm.disk_update app1 disk_addr=scsi.0 new_size=1G",
    "vm.disk_update app1 disk_addr=scsi.9 new_size=40G",
    "vm.disk_update app1 disk_addr=sd0 new_size=40G",
    "vm.disk_update app1 disk_addr=ide.0 new_size=40G",
    "vm.disk_update app1 disk_addr=scsi.0 clone_from_image=tools",
    "vm.disk_update app1 disk_addr=ide.0 clone_from_image=ubuntu",
    "vm.disk_update app1 disk_addr=scsi.0",
    "vm.disk_delete app1 disk_addr=scsi.7",
    "vm.disk_get app1 disk_addr=ide.3",
    "vm.update_boot_device app1",
    "vm.update_boot_device app1 disk_addr=ide.3",
    "vm.update_boot_device app1 mac_addr=50:6b:8d:00:00:99",
    "vm.update_boot_device app1 disk_addr=scsi.0 mac_addr=50:6b:8d:00:00:99",
]


def test_images_and_disks_print_as_ahv_does(golden):
    session = StorageSession(topology.load(str(TRAINING)))
    transcript = []
    for line in STORAGE:
        if "{scsi1}" in line:  # the vmdisk UUID of app2's second disk, as a trainee copies it from vm.disk_get
            line = line.format(scsi1=session.control().disk("app2", "scsi.1").uuid)
        transcript += [f"<acropolis> {line}", *run(session, line)]
    transcript += refusals(session, ERRORS)
    golden(GOLDEN / "storage.txt", "\n".join(transcript) + "\n")

    lab = model.resolve(session.topo)
    (pool,) = lab.pools
    volumes = {v.purpose: v for v in pool.volumes}
    ubuntu = next(im for im in session.topo.images if im.name == "ubuntu")
    assert volumes["image ubuntu"].source == "/srv/images/ubuntu.qcow2" and volumes["image ubuntu"].format == "qcow2"
    assert volumes["image tools"].format == "raw"
    assert volumes["disk scsi.0 of app1"].backing == pool.path_of(ubuntu.vmdisk_uuid)  # copy-on-write over the image
    assert volumes["disk scsi.1 of app1"].capacity == 30 << 30 and volumes["disk scsi.1 of app1"].backing is None
    assert volumes["disk scsi.1 of app2"].source == pool.path_of(session.control().disk("app1", "scsi.1").uuid)
    app1 = next(d for d in lab.domains if d.ahv_name == "app1")
    assert [(d.bus, d.index, d.target, d.device) for d in app1.disks] == [
        ("scsi", 0, "sda", "disk"), ("scsi", 1, "sdb", "disk"), ("ide", 0, "hda", "cdrom"), ("sata", 0, "sdiw", "cdrom"),
        ("scsi", 2, "sdc", "disk")]
    assert app1.firmware_boot and app1.seed  # its boot disk is a clone of a bootable image: its own OS boots
    docs = render.render_all(lab, render.Adaptation())
    for name, xml in docs.items():
        assert schema.problems(xml) == [], name


def test_a_vm_with_blank_or_data_disks_runs_the_built_in_guest():
    session = StorageSession(topology.load(str(TRAINING)))
    for line in ("image.create data source_url=file:///srv/images/data.qcow2", "vm.create db1",
                 "vm.disk_create db1 clone_from_image=data", "vm.disk_create db1 create_size=1G"):
        acli.execute(session, line, say=lambda _m: None)
    db1 = next(d for d in model.resolve(session.topo).domains if d.ahv_name == "db1")
    assert not db1.firmware_boot and db1.seed is None and len(db1.disks) == 2


def test_a_disk_deleted_and_made_again_at_its_address_is_another_vmdisk():
    """A new disk must never find the old one's volume (and its data) under its name."""
    session = StorageSession(topology.load(str(TRAINING)))
    for line in ("vm.create db1", "vm.disk_create db1 create_size=1G"):
        acli.execute(session, line, say=lambda _m: None)
    first = session.control().disk("db1", "scsi.0").uuid
    for line in ("vm.disk_delete db1 disk_addr=scsi.0", "vm.disk_create db1 create_size=1G"):
        acli.execute(session, line, say=lambda _m: None)
    assert session.control().disk("db1", "scsi.0").uuid != first


@pytest.mark.parametrize("text, size", [("20G", 20 << 30), ("512M", 512 << 20), ("1T", 1 << 40), ("10GiB", 10 << 30),
                                        ("1048576", 1 << 20)])
def test_sizes_read_as_acli_writes_them(text, size):
    from labkit.values import disk_size, size_text

    assert disk_size(text) == size and disk_size(size_text(size)) == size


def test_a_topology_file_with_disks_is_checked_where_it_is_written():
    text = (TRAINING.read_text() + "images:\n  - {name: iso, source: /srv/images/tools.iso, type: iso}\n"
            "vms:\n  - name: v1\n    node: node1\n    disks:\n      - {cdrom: true, bus: scsi, image: iso}\n"
            "      - {size: 1G, index: 0}\n      - {size: 1G, index: 0}\n      - {image: iso}\n    boot: scsi.5\n")
    with pytest.raises(LabkitError) as err:
        topology.parse(text, "t.yaml")
    assert str(err.value).splitlines() == [
        "t.yaml:22: vms[0].disks[0].bus: a CD-ROM sits on bus ide or sata, not scsi; set bus: ide",
        "t.yaml:25: vms[0].disks[3].image: image iso is an ISO; clone it to a CD-ROM (cdrom: true)",
        "t.yaml:24: vms[0].disks[2].index: disk address 'scsi.0' is used twice (first at vms[0].disks[1].index); "
        "each must be unique",
        "t.yaml:26: vms[0].boot: 'scsi.5' is not one of the VM's disks or NICs; did you mean 'scsi.2'? "
        "defined: scsi.0, scsi.1, scsi.2"]
