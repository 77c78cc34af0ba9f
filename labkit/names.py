"""Deterministic names and identities.

Everything here is a pure function of (lab, node, VM, NIC) names, so the same
topology always resolves to the same MACs, UUIDs and interface names, and two
labs never share a UUID.  Names that live in the workstation's single
namespace (links, OVS bridges, libvirt objects) carry the lab's name, or an
AHV name where that is free (`fallback` otherwise).
"""

from __future__ import annotations

import hashlib
import re
import uuid

IFNAME_MAX = 15
LABKIT_UUID_NS = uuid.UUID("6a0b4f0e-9a1c-5d2e-8f3b-1a6b5c4d3e2f")
CVM_OUI = "52:54:00"  # QEMU's, as on the seed's CVM
UVM_OUI = "50:6b:8d"  # AHV's default for user VMs
NETNS_PREFIX = "labkit."  # then <lab>.<node or gwN>: "." is in neither name, so ownership is unambiguous


def digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def short(*parts: str, length: int = 4) -> str:
    return digest(*parts)[:length]


def fit(name: str, salt: int = 0) -> str:
    """A Linux interface name of at most 15 bytes: kept as is when it fits, else its first 10 bytes,
    '-', and 4 hex digits of a hash of the whole name. A `salt` (tried when a lab's own names
    collide) always hashes, so every salt gives another name."""
    if len(name.encode()) <= IFNAME_MAX and not salt:
        return name
    return f"{name.encode()[:10].decode(errors='ignore').rstrip('-')}-{short(name, str(salt) if salt else '')}"


def fallback(ahv_name: str, lab: str, node: str, limit: int = IFNAME_MAX, salt: int = 0) -> str:
    """The documented fallback for an AHV name held by someone else:
    `<ahv name>-<4 hex of lab/node>`, the AHV part cut to fit `limit`."""
    tag = short(lab, node, *([str(salt)] if salt else []))
    return f"{ahv_name[: limit - 5]}-{tag}"


_DOMAIN_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def domain_name(ahv_name: str) -> str:
    """The libvirt domain name of a VM named `ahv_name` on AHV (any printable text up to 80
    characters, SQL_User05, "web 1"): the AHV name itself where it is a plain name, else a slug of
    it with 4 hex digits of its hash (stable, and distinct from any plain name)."""
    if _DOMAIN_SAFE.fullmatch(ahv_name):
        return ahv_name
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", ahv_name).strip("-._")[:40] or "vm"
    return f"{slug}-{short(ahv_name)}"


def hostname(ahv_name: str) -> str:
    """A DNS host name (one label) for a VM's guest and its DHCP binding, from its AHV name."""
    label = re.sub(r"[^A-Za-z0-9-]+", "-", ahv_name).strip("-")[:63].rstrip("-")
    return label or f"vm-{short(ahv_name)}"


def container_name(lab: str) -> str:
    """The lab's storage container, named as AHV names the one it makes: default-container-<14 digits>."""
    return f"default-container-{int(digest(lab, 'container'), 16) % 10**14:014d}"


def uuid_for(*parts: str) -> str:
    return str(uuid.uuid5(LABKIT_UUID_NS, "/".join(parts)))


def mac(oui: str, *parts: str, bump: int = 0) -> str:
    tail = digest(*parts, str(bump))[:6]
    return f"{oui}:{tail[0:2]}:{tail[2:4]}:{tail[4:6]}"


def tap_name(*parts: str, bump: int = 0) -> str:
    """AHV-looking tap names (`tap345` on the seed): 'tap' and five digits."""
    return f"tap{int(digest(*parts, str(bump))[:8], 16) % 100000:05d}"


LAB_NAME = re.compile(r"[a-z][a-z0-9-]{0,11}")  # used with fullmatch: no trailing newline slips through


def is_lab_name(name: str) -> bool:
    return LAB_NAME.fullmatch(name) is not None


def netns(lab: str, what: str) -> str:
    return f"{NETNS_PREFIX}{lab}.{what}"


def netns_lab(name: str) -> str | None:
    """The lab owning a namespace named by `netns`, or None when it is not labkit's."""
    if not name.startswith(NETNS_PREFIX):
        return None
    lab, sep, _ = name[len(NETNS_PREFIX):].partition(".")
    return lab if sep else None


def flow_cookie(lab: str) -> str:
    """The OpenFlow cookie of a lab's rules: 'LK' and 48 bits of its name (ovs-ofctl's hex form)."""
    return f"0x4c4b{digest(lab)[:12]}"


FLOW_COOKIE_MASK = "0xffffffffffffffff"


def flows_digest(flows: tuple[str, ...]) -> str:
    """Names a set of OpenFlow rules (kept in the bridge's external_ids when labkit sets them)."""
    return digest(*sorted(flows))[:16]

LINK_MARK = "labkit:"  # IFLA_IFALIAS of every link labkit creates: labkit:<lab>:<node>:<purpose>


def link_alias(lab: str, *parts: str) -> str:
    return ":".join((LINK_MARK.rstrip(":"), lab) + parts)


def link_lab(alias: str | None) -> str | None:
    if not alias or not alias.startswith(LINK_MARK):
        return None
    return alias.split(":")[1]


METADATA_NS = "urn:labkit:lab:1"  # libvirt <metadata><labkit:lab name=... node=... role=... digest=.../>


def metadata_of(xml: str) -> dict[str, str]:
    """The labkit attributes in a libvirt document's <metadata> ({} when it is not a lab's)."""
    from lxml import etree  # here, not at import: names is read by processes that never parse XML

    root = etree.fromstring(xml.encode())
    node = root.find(f"metadata/{{{METADATA_NS}}}lab")
    return dict(node.attrib) if node is not None else {}


def stable_mac(*parts: str) -> str:
    """A locally administered unicast MAC from `parts` (the same parts, the same MAC)."""
    digest = hashlib.sha256("\0".join(parts).encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02,) + tuple(digest[:5]))
