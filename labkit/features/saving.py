"""lab.save and lab.restore on the host (saves.py says what a save holds).

Save: under the lab's lock, its effective state and DHCP leases are copied, then each running
guest is saved by libvirt (virDomainSaveFlags: memory and devices to a file, the guest stopped),
its disks copied while nothing writes them, and it is resumed at once from that file
(virDomainRestoreFlags): the lab runs on, each guest paused for as long as its own save took.

Restore: the saved effective state becomes the lab's again, the saved guests are stopped, their
disks put back, the rest of the lab brought to the saved design by lab.up's pipeline with those
guests held (defined, never booted), and libvirt restores each from its file: it runs on from the
moment it was saved (its uptime, its RAM disk, its addresses and leases).

Either leaves nothing half-made: a save is written to a hidden directory and renamed when whole.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from pathlib import Path

from .. import paths, saves, state
from ..errors import LabkitError
from ..values import size_text

EFFECTIVE = ("topology.yaml", "ipam.json", "control.json")


def host_facts(virt) -> dict[str, str]:
    from .. import images

    image = images.current()
    return virt.hypervisor() | {"guest_image": image.name if image else ""}


def labkit_version() -> str:
    from ..memo import code_digest

    return code_digest()


def _disk_files(lab) -> list[str]:
    """Every file a VM of the lab writes: its disks (vmdisks, clones) and overlays; not images
    (read-only backing files), CD-ROMs or cloud-init seeds (read-only)."""
    files = []
    for dom in lab.domains:
        files += [d.path for d in dom.disks if d.path and d.device == "disk" and not d.readonly]
        files += [dom.overlay] if dom.overlay else []
    return sorted(set(f for f in files if Path(f).exists()))


def _size(folder: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in folder.rglob("*") if p.is_file())


def save(lab_name: str, name: str, say=print) -> saves.Manifest:
    from ..pipeline import host_session, resolved_on

    final = saves.directory(lab_name, name)
    if final.exists():
        raise LabkitError(f"lab {lab_name} has a save {name} already; delete it first (invoke lab.save --delete {name} "
                          f"--lab {lab_name}) or choose another name")
    with state.LabLock(lab_name, say):
        effective = state.read_effective(lab_name)
        if effective is None:
            raise LabkitError(f"lab {lab_name} is not up on this host (no effective state); bring it up first")
        lab, observed = resolved_on(str(state.topology_file(lab_name)))
        running = sorted(d.name for d in observed.domains if d.lab == lab_name and d.active)
        partial = state.private_dir(saves.directory(lab_name)) / f".{name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        try:
            for sub in ("", "domains", "files", "leases"):
                state.private_dir(partial / sub)
            for filename, data in zip(EFFECTIVE, (effective.topology, effective.ledger, effective.stamps)):
                state.write_private(partial / filename, data)
            state.write_private(partial / "state.json", json.dumps(state.load(lab_name)))
            leases = {}
            for lease in sorted((paths.RUN_DIR / lab_name / "dhcp").glob("*.leases")):
                leases[lease.stem] = f"leases/{lease.name}"
                shutil.copyfile(lease, partial / leases[lease.stem])
            disks = _disk_files(lab)
            copies = {f: f"files/{i}" for i, f in enumerate(disks)}
            owner = {f: d.name for d in lab.domains for f in disks
                     if f == d.overlay or any(k.path == f for k in d.disks)}

            def copy_disks_of(domain: str | None) -> None:
                for f in disks:
                    if owner.get(f) == domain:
                        shutil.copyfile(f, partial / copies[f])

            with host_session() as host:
                facts = host_facts(host.virt)
                for f in disks:  # the disks of guests not running: nothing writes them now
                    if owner.get(f) not in running:
                        shutil.copyfile(f, partial / copies[f])
                files = {d: str(partial / "domains" / f"{d}.save") for d in running}
                started = time.monotonic()
                paused = host.virt.save_domains(files, lab_name, while_saved=copy_disks_of)
                _no_ipv6_on_taps(host, running)
            say(f"saved {len(running)} guest(s) in {time.monotonic() - started:.1f} s; each paused "
                f"{max(paused.values(), default=0):.1f} s at most, and runs on")
            manifest = saves.Manifest(lab_name, name, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                      labkit_version(), facts, {d: f"domains/{d}.save" for d in running}, copies, leases)
            manifest = saves.Manifest(**(manifest.to_json() | {"size": _size(partial)}))
            state.write_private(partial / "manifest.json", json.dumps(manifest.to_json(), indent=1) + "\n")
            partial.rename(final)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    return manifest


def manifest(lab_name: str, name: str) -> saves.Manifest:
    folder = saves.directory(lab_name, name)
    data = state.read_private(folder / "manifest.json")
    if data is None:
        known = ", ".join(m.name for m in listed(lab_name)) or "none"
        raise LabkitError(f"lab {lab_name} has no save {name} (its saves: {known}); `invoke lab.save --list` lists them")
    return saves.Manifest.from_json(json.loads(data))


def listed(lab_name: str) -> list[saves.Manifest]:
    out = []
    for data in sorted(saves.directory(lab_name).glob("*/manifest.json")):
        try:
            out.append(saves.Manifest.from_json(json.loads(data.read_text())))
        except (LabkitError, ValueError, TypeError):
            continue
    return out


def delete(lab_name: str, name: str) -> None:
    folder = saves.directory(lab_name, name)
    manifest(lab_name, name)  # one that exists, or the sentence saying which do
    shutil.rmtree(folder)
    with contextlib.suppress(OSError):  # the lab's folder too, once it holds no save
        folder.parent.rmdir()


def restore(lab_name: str, name: str, say=print, phases=None) -> saves.Manifest:
    from ..pipeline import host_session, up

    saved = manifest(lab_name, name)
    folder = saves.directory(lab_name, name)
    with state.LabLock(lab_name, say), host_session() as host:
        refusal = saves.refusal(saved, labkit_version(), host_facts(host.virt))
        if refusal:
            raise LabkitError(refusal)
        topology, ledger, stamps = (state.read_private(folder / f) for f in EFFECTIVE)
        state.save_effective(lab_name, state.Effective(topology, ledger, stamps))
        state.save(lab_name, json.loads(state.read_private(folder / "state.json") or b"{}"))
        host.virt.stop_domains([d for d in saved.domains if host.virt.is_active(d)])
        for original, copy in saved.files.items():
            Path(original).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folder / copy, original)
        dhcp_dir = state.private_dir(paths.RUN_DIR / lab_name / "dhcp")
        for node, copy in saved.leases.items():
            state.write_private(dhcp_dir / f"{node}.leases", state.read_private(folder / copy) or b"")
        up(str(state.topology_file(lab_name)), say=say, phases=phases, held=frozenset(saved.domains))
        started = time.monotonic()
        host.virt.restore_domains({d: str(folder / f) for d, f in saved.domains.items()})
        _no_ipv6_on_taps(host, list(saved.domains))
        say(f"restored {len(saved.domains)} guest(s) from save {name} in {time.monotonic() - started:.1f} s")
    return saved


def _no_ipv6_on_taps(host, domains: list[str]) -> None:
    """A resumed guest's taps are made anew in the workstation's namespace: no IPv6 on them (apply.py)."""
    for name in domains:
        for ifname in host.virt.ifnames(name):
            host.netlink.disable_ipv6(ifname)


def total(lab_name: str) -> str:
    return size_text(sum(m.size for m in listed(lab_name)))
