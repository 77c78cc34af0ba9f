"""Validate rendered XML against libvirt's own RelaxNG schemas (what `virsh define` enforces)."""

from __future__ import annotations

import functools
from pathlib import Path

from lxml import etree

from .errors import HostError

SCHEMA_DIR = Path("/usr/share/libvirt/schemas")
SCHEMAS = {"pool": "storagepool", "volume": "storagevol"}  # a document's root element -> its schema


@functools.cache
def _schema(kind: str) -> etree.RelaxNG:
    path = SCHEMA_DIR / f"{kind}.rng"
    if not path.exists():
        raise HostError(f"libvirt's schema {path} is missing; install libvirt0 (./bootstrap.sh does)")
    return etree.RelaxNG(etree.parse(str(path)))


def problems(xml: str) -> list[str]:
    """Schema errors of one libvirt document (domain or network); [] when valid."""
    root = etree.fromstring(xml.encode())
    schema = _schema(SCHEMAS.get(root.tag, root.tag))
    if schema.validate(root):
        return []
    return [f"line {e.line}: {e.message}" for e in schema.error_log]
