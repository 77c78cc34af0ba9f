"""Where labkit keeps things: on the host, and in this repository (one place for every path)."""

from __future__ import annotations

import hashlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
REPO = PACKAGE.parent


def _data(name: str) -> Path:
    """A data directory: inside the package when installed from a wheel, else the checkout's."""
    return PACKAGE / name if (PACKAGE / name).is_dir() else REPO / name


REPO_IMAGES = _data("images")  # the guest's sources: init scripts, agent, kernel config
TEMPLATE_DIR = _data("xml_templates")

RUN_DIR = Path("/run/labkit")  # per lab: lock, state, effective topology, intents, journal, agent sockets
IMAGES = Path("/var/lib/labkit/images")  # built guest images by digest; `guest` is the current one
IMAGE_DIR = IMAGES / "guest"
DISK_DIR = Path("/var/lib/labkit/disks")  # per lab: copy-on-write overlays and cloud-init seeds of VMs with their own image
STORAGE_DIR = Path("/var/lib/labkit/storage")  # per lab: its storage container (a libvirt pool) of images and vmdisks
SAVE_DIR = Path("/var/lib/labkit/saves")  # per lab: lab.save's saves (saves.py)
LOG_DIR = Path("/var/log/labkit")  # per lab: the guests' serial logs
DEB_CACHE = Path("/var/cache/labkit/debs")  # Debian packages labkit downloads (the kernel's source)
KERNEL_CACHE = Path("/var/cache/labkit/kernel")  # built guest kernels by digest

OVSDB_SOCK = "/var/run/openvswitch/db.sock"  # the host's services, as Debian's packages place them
LIBVIRT_SOCK = "/var/run/libvirt/libvirt-sock"
VIRTLOGD_SOCK = "/var/run/libvirt/virtlogd-sock"
OVS_CTL = "/usr/share/openvswitch/scripts/ovs-ctl"
KVM_DEVICE = Path("/dev/kvm")


def agent_socket(lab: str, domain: str, suffix: str = ".sock") -> str:
    """The unix socket of a domain's agent channel (libvirt binds it; labkit connects). A socket's
    path has room for 107 bytes: a long domain name is replaced by a digest of it."""
    path = f"{RUN_DIR}/{lab}/agents/{domain}{suffix}"
    if len(path.encode()) > 107:
        path = f"{RUN_DIR}/{lab}/agents/{hashlib.sha256(domain.encode()).hexdigest()[:24]}{suffix}"
    return path


ACLI_SUFFIX = ".acli.sock"


def acli_socket(lab: str, domain: str) -> str:
    """The unix socket of a CVM's acli channel: the guest's `acli` writes there, and the lab's
    relay (labkit/acli_relay.py), connected to every such socket of the lab, answers."""
    return agent_socket(lab, domain, ACLI_SUFFIX)


def relay_pidfile(lab: str) -> Path:
    """The lab's acli relay: its pid and the version of labkit it runs (host/relay.py)."""
    return RUN_DIR / lab / "acli-relay.pid"
