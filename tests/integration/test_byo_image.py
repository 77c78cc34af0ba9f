"""Bring-your-own image: a VM boots a qcow2 disk made here (syslinux + the built-in guest on a FAT
disk, no download) and takes its addresses and hostname from the cloud-init seed labkit writes."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from labkit import images

from .conftest import invoke, labkit_leftovers, sh

TOPOLOGY = """\
name: byo
switch:
  vlans: [0, 32]
  gateways: {0: 10.59.30.1/23, 32: 10.32.0.1/24}
nodes:
  - name: node1
    host_ip: 10.59.31.91/23
    cvm: {ip: 10.59.30.91/23}
    uplinks: {eth2: 10g, eth3: 10g}
    bridges:
      br0: {bond: {name: br0-up, interfaces: [eth2, eth3]}}
networks:
  - {name: vlan32, vlan: 32}
vms:
  - {name: disk1, node: node1, image: disk1.qcow2, nics: [{network: vlan32, ip: 10.32.0.91/24}]}
  - {name: kern1, node: node1, nics: [{network: vlan32, ip: 10.32.0.92/24}]}
"""
SYSLINUX_CFG = "DEFAULT linux\nLABEL linux\n  KERNEL vmlinuz\n  APPEND initrd=initrd.img console=ttyS0,115200n8 quiet\n"


def make_image(directory) -> str:
    """A BIOS-bootable qcow2: FAT superfloppy, syslinux boot sector, kernel + initramfs, no labkit.* args."""
    guest = images.current()
    raw, cfg, qcow = directory / "disk.raw", directory / "syslinux.cfg", directory / "disk1.qcow2"
    cfg.write_text(SYSLINUX_CFG)
    subprocess.run(["truncate", "-s", "48M", str(raw)], check=True)
    subprocess.run(["mkfs.vfat", "-n", "BYODISK", str(raw)], check=True, capture_output=True)
    subprocess.run(["syslinux", "--install", str(raw)], check=True)
    subprocess.run(["mcopy", "-i", str(raw), str(guest / "vmlinuz"), str(guest / "initrd.img"), str(cfg), "::/"], check=True)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow)], check=True)
    return str(qcow)


@pytest.fixture(scope="module")
def byo_lab():
    directory = Path(tempfile.mkdtemp(prefix="labkit-byo-", dir="/var/tmp"))
    directory.chmod(0o755)  # QEMU runs as libvirt-qemu: it must reach the image
    image = make_image(directory)
    checksum = sh(f"sha256sum {image}")
    topology = directory / "byo.yaml"
    topology.write_text(TOPOLOGY)
    invoke("lab.down", "--lab", "byo")
    run = invoke("lab.up", "--topology", str(topology))
    yield run, topology, image, checksum
    invoke("lab.down", "--lab", "byo")
    shutil.rmtree(directory)
    assert labkit_leftovers("byo") == []


def test_image_vm_boots_from_its_disk_and_verifies(byo_lab):
    run, topology, _, _ = byo_lab
    assert "lab byo verified" in run.stderr
    xml = sh("virsh -c qemu:///system dumpxml disk1")
    assert "<kernel>" not in xml and "/var/lib/labkit/disks/byo/disk1.qcow2" in xml and "disk1-cidata.iso" in xml


def test_seed_gives_hostname_and_addresses(byo_lab):
    _, topology, _, _ = byo_lab
    assert invoke("lab.console", "disk1", "--topology", str(topology), "--cmd", "hostname").stdout.strip() == "disk1"
    out = invoke("lab.console", "disk1", "--topology", str(topology), "--cmd", "ip addr show eth0; ip route").stdout
    assert "inet 10.32.0.91/24" in out and "default via 10.32.0.1" in out
    mount = invoke("lab.console", "disk1", "--topology", str(topology), "--cmd", "cat /mnt/cidata/user-data").stdout
    assert mount.startswith("#cloud-config") and "labkit-agent" in mount


def test_an_image_qemu_cannot_read_is_one_clear_error(tmp_path):
    image = tmp_path / "private.qcow2"  # under pytest's 0700 directory
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "16M"], check=True)
    topology = tmp_path / "private.yaml"
    topology.write_text(TOPOLOGY.replace("name: byo", "name: byo2").replace("disk1.qcow2", str(image)))
    try:
        run = invoke("lab.up", "--no-verify", "--topology", str(topology), expect=4)
        assert "cannot be read by QEMU" in run.stderr and "chmod o+rx" in run.stderr
    finally:
        invoke("lab.down", "--lab", "byo2")
    assert labkit_leftovers("byo2") == []


def test_the_users_image_is_never_written(byo_lab):
    _, _, image, checksum = byo_lab
    assert sh(f"sha256sum {image}") == checksum
    info = json.loads(sh("qemu-img info -U --output=json /var/lib/labkit/disks/byo/disk1.qcow2"))
    assert info["backing-filename"] == image
