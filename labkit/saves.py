"""lab.save and lab.restore: what a save holds and when it may be restored (pure).

A save is a directory, /var/lib/labkit/saves/<lab>/<name>/ (root's own), holding the lab's
effective state (topology, IPAM ledger, logical timestamps: its design at that moment), each
running guest's memory and device state as libvirt's save wrote it (domains/<domain>.save), a copy
of every disk file of the lab's VMs (files/N), its DHCP servers' lease files, and manifest.json:
this module's `Manifest`. A save is restored only by the labkit and onto the host that made it:
QEMU reads its own device state back, and labkit's guests boot labkit's kernel.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from .errors import LabkitError
from .paths import SAVE_DIR
from .values import size_text

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
VERSION = 1


def checked_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise LabkitError(f"{name!r} is not a save name: use 1 to 64 letters, digits, '.', '_' or '-', "
                          f"starting with a letter or digit")
    return name


@dataclass(frozen=True)
class Manifest:
    lab: str
    name: str
    created: str  # ISO 8601, UTC
    labkit: str  # the code digest of the labkit that made it (memo.code_digest)
    host: dict[str, str]  # libvirt, qemu, cpu (Virt.hypervisor), guest_image
    domains: dict[str, str] = field(default_factory=dict)  # running domain -> its save file (relative)
    files: dict[str, str] = field(default_factory=dict)  # disk file on the host -> its copy (relative)
    leases: dict[str, str] = field(default_factory=dict)  # DHCP server (node) -> its lease file's copy
    size: int = 0  # bytes the save takes
    version: int = VERSION

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Manifest:
        if data.get("version") != VERSION:
            raise LabkitError(f"save {data.get('name')!r} is of another format ({data.get('version')}); make it again")
        return cls(**data)

    def line(self) -> str:
        return f"{self.name:<20} {self.created}  {size_text(self.size):>9}  {len(self.domains)} guest(s) running"


def refusal(manifest: Manifest, labkit: str, host: dict[str, str]) -> str | None:
    """Why this save cannot be restored here (one sentence), or None."""
    where = f"save {manifest.name} of lab {manifest.lab}"
    if manifest.labkit != labkit:
        return (f"{where} was made by another labkit ({manifest.labkit[:16]}; this one is {labkit[:16]}): a guest's saved "
                f"state is only restored by the labkit that saved it; bring the lab up and save it again")
    changed = [f"{key} {manifest.host.get(key) or 'none'} then, {host.get(key) or 'none'} now"
               for key in sorted(set(manifest.host) | set(host)) if manifest.host.get(key) != host.get(key)]
    if changed:
        return f"{where} was made on another host ({', '.join(changed)}): QEMU cannot resume its guests; save the lab again"
    return None


def directory(lab: str, name: str | None = None):
    base = SAVE_DIR / lab
    return base if name is None else base / checked_name(name)
