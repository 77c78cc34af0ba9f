"""Images and disks on a real lab, as a trainee builds a workshop VM with acli: an image made here
(a qcow2 with a marker written into it), a VM with a clone of it and a NIC on a managed network;
the guest reads the marker from its disk and holds its DHCP address; a disk hot-added and grown
while the guest runs; a clone's copy of a disk; a CD-ROM's ISO swapped live; a VM that boots its
image's own OS; UEFI; export -> down -> up; nothing left behind. Tests run in file order."""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from ..conftest import REPO
from .conftest import invoke, labkit_leftovers, sh
from .test_byo_image import make_image

LAB = "store"
TOPOLOGY = str(REPO / "tests/topologies/storage.yaml")
MARKER = b"LABKIT-DISK-MARKER"


def acli(line: str, expect: int = 0) -> str:
    return invoke("acli", "--lab", LAB, "-c", line, expect=expect).stdout


def guest(vm: str, command: str) -> str:
    return invoke("lab.console", vm, "--lab", LAB, "--cmd", command).stdout


def until(check, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s"
        time.sleep(0.5)


def vmdisk(text: str) -> str:
    """The vmdisk_uuid of the first disk or image an acli printout shows (not source_vmdisk_uuid)."""
    return re.search(r'^\s*vmdisk_uuid: "([^"]+)"', text, re.M).group(1)


def uptime(vm: str) -> float:
    return float(guest(vm, "cut -d' ' -f1 /proc/uptime"))


@pytest.fixture(scope="module")
def files():
    directory = Path(tempfile.mkdtemp(prefix="labkit-store-", dir="/var/tmp"))
    raw, qcow = directory / "data.raw", directory / "data.qcow2"
    with raw.open("wb") as f:  # 64 MiB, the marker at 1 MiB
        f.truncate(64 << 20)
        f.seek(1 << 20)
        f.write(MARKER)
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(qcow)], check=True)
    raw.unlink()
    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident="TOOLS")
    iso.add_fp(io.BytesIO(b"tools\n"), 6, "/README.;1")
    iso.write(str(directory / "tools.iso"))
    iso.close()
    yield {"data": qcow, "tools": directory / "tools.iso", "byo": Path(make_image(directory)), "dir": directory}
    shutil.rmtree(directory)


@pytest.fixture(scope="module")
def lab(files):
    invoke("lab.down", "--lab", LAB)  # what an earlier, killed run left
    invoke("lab.up", "--topology", TOPOLOGY)
    yield
    invoke("lab.down", "--lab", LAB)
    assert labkit_leftovers(LAB) == []
    assert not Path(f"/var/lib/labkit/storage/{LAB}").exists()


def test_a_clone_of_an_image_made_here_is_the_guests_disk(lab, files):
    digest = hashlib.sha256(files["data"].read_bytes()).hexdigest()
    assert acli(f"image.create data source_url=file://{files['data']} container=default "
                "image_type=kDiskImage").endswith("ImageCreate: complete\n")
    for line in ("vm.create web1 memory=128M", "vm.disk_create web1 clone_from_image=data",
                 "vm.nic_create web1 network=web", "vm.on web1"):
        assert acli(line).endswith("complete\n"), line
    invoke("lab.verify", "--lab", LAB)
    assert guest("web1", "cat /sys/block/sda/size").strip() == str((64 << 20) // 512)
    assert guest("web1", "dd if=/dev/sda bs=1 skip=1048576 count=18 2>/dev/null").strip().encode() == MARKER
    assert "inet 10.50.0.100/24" in guest("web1", "ip -4 addr show eth0")  # its DHCP address
    pool = re.search(r'container_name: "([^"]+)"', acli("image.get data")).group(1)
    volumes = sh(f"virsh -c qemu:///system vol-list {pool}")
    image_disk = vmdisk(acli("image.get data"))
    assert image_disk in volumes
    clone = json.loads(sh(f"qemu-img info -U --output=json /var/lib/labkit/storage/{LAB}/{pool}/"
                          + vmdisk(acli("vm.disk_get web1 disk_addr=scsi.0"))))
    assert clone["backing-filename"].endswith(image_disk)  # copy-on-write over the image's copy
    assert hashlib.sha256(files["data"].read_bytes()).hexdigest() == digest  # the user's file is only read


def test_a_disk_hot_added_and_grown_is_seen_while_the_guest_runs(lab):
    before = uptime("web1")
    out = acli("vm.disk_create web1 create_size=128M container=default")
    assert out.endswith("DiskCreate: complete\n")
    until(lambda: guest("web1", "cat /sys/block/sdb/size 2>/dev/null").strip() == str((128 << 20) // 512),
          "the hot-added disk in the guest")
    acli("vm.disk_update web1 disk_addr=scsi.1 new_size=256M")
    until(lambda: guest("web1", "cat /sys/block/sdb/size").strip() == str((256 << 20) // 512), "the grown disk")
    assert uptime("web1") > before  # the same boot: nothing restarted it
    assert "Device bus  Device index\nscsi        0\nscsi        1\n" == acli("vm.disk_list web1")


def test_a_clone_of_the_vm_copies_its_disks(lab):
    # conv=fsync: the guest flushes its disk, as a copy of a running VM holds what its disks persisted
    guest("web1", f"printf {MARKER.decode()} | dd of=/dev/sdb bs=1 seek=4096 conv=notrunc,fsync 2>/dev/null")
    assert acli("vm.clone web2 clone_from_vm=web1").endswith("VmClone: complete\n")
    acli("vm.on web2")
    invoke("lab.verify", "--lab", LAB)
    assert guest("web2", "dd if=/dev/sdb bs=1 skip=4096 count=18 2>/dev/null").strip().encode() == MARKER
    assert guest("web2", "dd if=/dev/sda bs=1 skip=1048576 count=18 2>/dev/null").strip().encode() == MARKER
    assert "inet 10.50.0.101/24" in guest("web2", "ip -4 addr show eth0")
    a, b = (vmdisk(acli(f"vm.disk_get {vm} disk_addr=scsi.1")) for vm in ("web1", "web2"))
    assert a != b  # a copy, not the same vmdisk


def test_a_cdrom_takes_an_iso_and_swaps_it_live(lab, files):
    acli(f"image.create tools source_url=file://{files['tools']} image_type=kIsoImage")
    acli("vm.disk_create web2 cdrom=true empty=true")  # IDE is not hot-pluggable: the VM restarts with it
    invoke("lab.verify", "--lab", LAB)
    blk = sh("virsh -c qemu:///system domblklist web2 --details")
    assert re.search(r"file\s+cdrom\s+hda\s+-", blk), blk
    before = uptime("web2")
    acli("vm.disk_update web2 disk_addr=ide.0 clone_from_image=tools")  # the medium goes in, the VM keeps running
    tools = vmdisk(acli("image.get tools"))
    assert re.search(rf"cdrom\s+hda\s+\S+/{tools}", sh("virsh -c qemu:///system domblklist web2 --details"))
    assert uptime("web2") > before


def test_an_image_served_on_this_workstation_is_downloaded_once_and_a_redirect_is_refused(lab, files):
    """source_url=http://127.0.0.1:PORT/... : fetched (no proxy, no redirect), kept as the image's source."""
    import functools
    import http.server
    import threading

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/elsewhere.qcow2":  # would lead off this machine: never followed
                self.send_response(302)
                self.send_header("Location", "http://192.0.2.1/x.qcow2")
                self.end_headers()
                return
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(files["dir"])))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        acli(f"image.create served source_url=http://127.0.0.1:{port}/{files['data'].name}")
        assert re.search(r"^  image_type: \"kDiskImage\"$", acli("image.get served"), re.M)
        refused = acli(f"image.create away source_url=http://127.0.0.1:{port}/elsewhere.qcow2", expect=1)
        assert "follows no redirect" in refused and refused.count("\n") == 1, refused
        assert "away" not in acli("image.list")
    finally:
        server.shutdown()
        server.server_close()
    pool = re.search(r'container_name: "([^"]+)"', acli("image.get served")).group(1)
    assert vmdisk(acli("image.get served")) in sh(f"virsh -c qemu:///system vol-list {pool}")
    downloaded = list(Path("/var/cache/labkit/downloads").glob(f"*-{files['data'].name}"))
    assert downloaded  # the image's source, kept for a later lab.up of an export
    acli("image.delete served")
    for path in downloaded:
        path.unlink()


def test_a_vm_boots_its_images_own_os(lab, files):
    acli(f"image.create byo source_url=file://{files['byo']}")
    for line in ("vm.create own1 memory=128M", "vm.disk_create own1 clone_from_image=byo",
                 "vm.nic_create own1 network=web", "vm.on own1"):
        acli(line)
    invoke("lab.verify", "--lab", LAB)
    xml = sh("virsh -c qemu:///system dumpxml own1")
    assert "<kernel>" not in xml and "<boot order=\"1\"/>" in xml.replace("'", '"')
    assert guest("own1", "hostname").strip() == "own1"  # cloud-init's seed, read by the image's own OS
    assert "inet 10.50.0.102/24" in guest("own1", "ip -4 addr show eth0")


def test_a_uefi_vm_starts_under_ovmf(lab):
    if not Path("/usr/share/qemu/firmware/60-edk2-x86_64.json").exists():
        pytest.fail("OVMF is not installed; host.bootstrap installs package ovmf")
    for line in ("vm.create efi1 memory=128M uefi_boot=true", "vm.nic_create efi1 network=web", "vm.on efi1"):
        acli(line)
    invoke("lab.verify", "--lab", LAB, "--timeout", "300")
    assert guest("efi1", "ls /sys/firmware/efi >/dev/null && echo efi").strip() == "efi"
    assert re.search(r"^      uefi_boot: true$", acli("vm.get efi1"), re.M)
    acli("vm.delete efi1", expect=0)


def test_export_down_up_restores_images_disks_and_placement(lab, tmp_path):
    exported = tmp_path / "store.yaml"
    exported.write_text(invoke("lab.export", "--lab", LAB).stdout)
    images, disks = acli("image.list"), acli("vm.disk_get web1")
    invoke("lab.down", "--lab", LAB)
    assert labkit_leftovers(LAB) == [] and not Path(f"/var/lib/labkit/storage/{LAB}").exists()
    invoke("lab.up", "--topology", str(exported))
    assert acli("image.list") == images
    assert acli("vm.disk_get web1") == disks
    assert guest("web1", "dd if=/dev/sda bs=1 skip=1048576 count=18 2>/dev/null").strip().encode() == MARKER  # cloned anew
    assert guest("web1", "cat /sys/block/sdb/size").strip() == str((256 << 20) // 512)


def test_a_save_keeps_what_a_guest_wrote_to_its_disk_and_restore_puts_it_back(lab):
    """lab.save copies a VM's disks while libvirt holds the guest saved; lab.restore puts them
    back with its memory: the sector written before the save reads back, the one after is gone."""
    def sector() -> str:
        return guest("web1", "dd if=/dev/sdb bs=16 count=1 2>/dev/null").strip()

    write = "printf '%-16s' {} | dd of=/dev/sdb bs=16 count=1 conv=notrunc,fsync 2>/dev/null"
    guest("web1", write.format("before-the-save"))
    invoke("lab.save", "disks", "--lab", LAB)
    guest("web1", write.format("after-the-save"))
    assert sector() == "after-the-save"
    invoke("lab.restore", "disks", "--lab", LAB)
    assert sector() == "before-the-save"
    guest("web1", "echo 3 > /proc/sys/vm/drop_caches")  # from the disk itself, not the restored page cache
    assert sector() == "before-the-save"
    invoke("lab.save", "--delete", "disks", "--lab", LAB)


def test_deleting_a_disk_and_an_image_removes_their_files(lab):
    pool = re.search(r'container_name: "([^"]+)"', acli("image.get tools")).group(1)
    data = vmdisk(acli("vm.disk_get web1 disk_addr=scsi.1"))
    acli("vm.disk_delete web1 disk_addr=scsi.1")
    assert data not in sh(f"virsh -c qemu:///system vol-list {pool}")
    tools = vmdisk(acli("image.get tools"))
    acli("vm.disk_delete web2 disk_addr=ide.0")
    invoke("acli", "--lab", LAB, "-y", "-c", "image.delete tools")
    assert tools not in sh(f"virsh -c qemu:///system vol-list {pool}")
