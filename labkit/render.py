"""Render the resolved lab into libvirt XML (pure: templates in, normalized XML out).

Templates in xml_templates/ hold the shape; lxml normalizes the result (one
element order, fixed indentation) and adds the ownership metadata, so a
rendered document diffs cleanly against a golden file and against what
libvirt reads back.  `Adaptation` (labkit/adaptation.py) is how a host bends
AHV's XML where it cannot run it; `Adaptation.ahv()` bends nothing.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass

import jinja2
from lxml import etree

from .adaptation import Adaptation
from .model import Domain, Lab, Pool, VirtNetwork, Volume
from .names import METADATA_NS
from .paths import TEMPLATE_DIR

AGENT_CHANNEL = "org.labkit.agent.0"
ACLI_CHANNEL = "org.labkit.acli.0"  # a CVM's: the guest's acli (images/guest/acli.c) to the lab's relay
# The serial console; quiet, since every console line is emulated port I/O. labkit's kernel
# (images/kernel/) runs without ACPI (acpi=off: the MP table lists the CPUs; see ACPI_CORES), skips the IO-APIC timer test that
# waits for ticks, and takes the APIC timer's period instead of calibrating it for 100 ms: QEMU's
# APIC timer counts at 1 GHz, so a tick (CONFIG_HZ=1000) is 1,000,000 counts.
# SeaBIOS's MP table lists one CPU per socket, so a guest with several cores per socket reads
# ACPI's MADT instead; its AML interpreter evaluating the PCI interrupt links took 1.5 s under
# TCG, so PCI interrupts keep the MP table's routing (the virtio devices use MSI-X anyway).
ACPI_CORES = "acpi=noirq"
BASE_CMDLINE = "console=ttyS0,115200n8 quiet {acpi} no_timer_check lapic_timer_period=1000000"

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)


def render_domain(dom: Domain, lab: Lab, adapt: Adaptation) -> str:
    template = "cvm.xml.j2" if dom.role == "cvm" else "uvm.xml.j2"
    text = _env.get_template(template).render(
        dom=dom, adapt=adapt, cmdline=kernel_cmdline(dom, adapt), passthrough=[_pci(p) for p in dom.passthrough],
        agent_channel=AGENT_CHANNEL, acli_channel=ACLI_CHANNEL,
    )
    return _finish(text, lab.name, dom.node, dom.role)


def render_network(net: VirtNetwork, lab: Lab, adapt: Adaptation) -> str:
    template = "local_network.xml.j2" if net.kind == "local" else "vm_network.xml.j2"
    ip = ipaddress.IPv4Interface(net.ip) if net.ip else None
    text = _env.get_template(template).render(net=net, adapt=adapt, ip=ip)
    return _finish(text, lab.name, net.node, net.kind)


def render_pool(pool: Pool) -> str:
    return _normalized(_env.get_template("pool.xml.j2").render(pool=pool))


def render_volume(vol: Volume) -> str:
    """A volume libvirt creates (a blank disk, a clone); an image's copy is written by qemu-img."""
    return _normalized(_env.get_template("volume.xml.j2").render(vol=vol))


def _normalized(text: str) -> str:
    parser = etree.XMLParser(remove_blank_text=True, remove_comments=True)
    return etree.tostring(etree.fromstring(text.encode(), parser), pretty_print=True, encoding="unicode")


def render_all(lab: Lab, adapt: Adaptation) -> dict[str, str]:
    """Every libvirt document of the lab by object name: networks first, then domains, then storage."""
    docs = {net.name: render_network(net, lab, adapt) for net in lab.networks}
    docs.update({dom.name: render_domain(dom, lab, adapt) for dom in lab.domains})
    for pool in lab.pools:  # storage documents by "pool:NAME" and "volume:NAME" (names apart from the others)
        docs[f"pool:{pool.name}"] = render_pool(pool)
        docs.update({f"volume:{vol.name}": render_volume(vol) for vol in pool.volumes})
    return docs


def kernel_cmdline(dom: Domain, adapt: Adaptation | None = None) -> str:
    """The guest's role, read by the guest agent's init: hostname, gateway, and per NIC (found by MAC)
    its addresses (or `dhcp` on a managed network); a trunk NIC lists its VLANs."""
    parts = [BASE_CMDLINE.format(acpi=ACPI_CORES if dom.cores > 1 or dom.uefi else "acpi=off")]  # UEFI has no MP table
    if adapt is not None and adapt.tsc_khz:
        parts.append(f"tsc_early_khz={adapt.tsc_khz} tsc=reliable")
    if adapt is not None and adapt.guest_image:
        parts.append(f"labkit.image={adapt.guest_image}")
    parts += [f"labkit.role={dom.role}", f"labkit.hostname={dom.hostname}"]
    if dom.gateway:
        parts.append(f"labkit.gw={dom.gateway}")
    for nic in dom.nics:
        value = ",".join([nic.mac, "dhcp"] if nic.dhcp else [nic.mac, *nic.addresses])
        if nic.trunk:
            value += ",vlans=" + "+".join(str(v) for v in nic.trunks if v != nic.native)
            value += "".join(f",v{vlan}={cidr}" for vlan, cidr in nic.vlan_addresses)
        parts.append(f"labkit.nic.{nic.guest_name}={value}")
    return " ".join(parts)


def _finish(text: str, lab: str, node: str, role: str) -> str:
    """Normalize and mark as the lab's: <metadata><labkit:lab name=... digest=.../></metadata>."""
    parser = etree.XMLParser(remove_blank_text=True, remove_comments=True)
    root = etree.fromstring(text.encode(), parser)
    digest = hashlib.sha256(etree.tostring(root, method="c14n")).hexdigest()[:16]
    metadata = etree.Element("metadata")
    mark = etree.SubElement(metadata, f"{{{METADATA_NS}}}lab", nsmap={"labkit": METADATA_NS})
    marks = [("name", lab), ("node", node), ("role", role), ("digest", digest)]
    if root.tag == "domain":
        marks.append(("core", core_digest(root)))
    for key, value in marks:
        mark.set(key, value)
    # libvirt's schemas want <metadata> right after name/uuid/title/description.
    anchor = root.find("uuid")
    anchor.addnext(metadata)
    return etree.tostring(root, pretty_print=True, encoding="unicode")


def core_digest(root) -> str:
    """A domain's definition but for what a running domain takes without a restart: its disks
    (hot-plugged) and the bridges its NICs plug into (moved by a live migration). Two definitions
    with the same core differ only there (livechange.py)."""
    core = etree.fromstring(etree.tostring(root))
    for disk in core.findall("devices/disk"):
        if disk.find("source") is None or "cidata" not in (disk.find("source").get("file") or ""):
            disk.getparent().remove(disk)
    for source in core.findall("devices/interface/source"):
        source.attrib.pop("bridge", None)
    for metadata in core.findall("metadata"):
        core.remove(metadata)
    return hashlib.sha256(etree.tostring(core, method="c14n")).hexdigest()[:16]


@dataclass(frozen=True)
class _Pci:
    domain: str
    bus: str
    slot: str
    function: str


def _pci(address: str) -> _Pci:
    domain, bus, rest = address.split(":")
    slot, function = rest.split(".")
    return _Pci(domain.lower(), bus.lower(), slot.lower(), function)

