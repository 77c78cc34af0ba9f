"""libvirt adapter (libvirt-python): networks and domains, observed through their <metadata> mark.

Domains are defined and started concurrently (libvirt connections are
thread-safe); objects whose <metadata> names another lab, or none, are never
changed.
"""

from __future__ import annotations

import contextlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import libvirt
from lxml import etree

from .. import readback
from ..errors import HostError
from . import DEADLINE, Connection, bounded, hung, stats
from ..hoststate import SeenDomain, SeenNetwork, SeenPool, SeenVolume
from ..names import metadata_of
from ..paths import IMAGES, RUN_DIR, STORAGE_DIR

URI = "qemu:///system"

# libvirt prints every error to stderr by default; labkit reports them itself.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


_events = threading.Lock()
_events_running = False
KEEPALIVE_INTERVAL = 5  # seconds between libvirt keepalive probes; DEADLINE's worth unanswered end the connection


def _event_loop() -> None:
    """libvirt's default event loop, in a thread of this process (once): it runs the connection's
    keepalive, so a libvirtd that stops answering closes the connection and every call waiting
    on it fails (libvirt's own bound on its calls, however long one legitimately takes)."""
    global _events_running
    with _events:
        if _events_running:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, daemon=True, name="libvirt events").start()
        _events_running = True


class Virt(Connection):
    def __init__(self, uri: str = URI):
        _event_loop()
        try:
            self.conn = bounded("libvirt", f"connecting to {uri}", libvirt.open, uri)
            interval = max(1, min(KEEPALIVE_INTERVAL, int(DEADLINE // 2)))
            self.conn.setKeepAlive(interval, max(1, int(DEADLINE // interval)))
        except libvirt.libvirtError as exc:
            raise HostError(f"cannot connect to libvirt at {uri} ({exc.get_error_message()}); run `invoke host.bootstrap`") from None
        if stats.enabled():  # bench/ counts the API calls
            self.conn = stats.Counted(self.conn, (libvirt.virDomain, libvirt.virNetwork))
        self._lock = threading.Lock()

    def close(self) -> None:
        with contextlib.suppress(libvirt.libvirtError):
            self.conn.close()

    # observe ----------------------------------------------------------------

    def observe(self) -> tuple[tuple[SeenNetwork, ...], tuple[SeenDomain, ...], tuple[SeenPool, ...]]:
        try:
            return (*self._observe(), self._pools())
        except libvirt.libvirtError as exc:
            raise self._failed("read the host's networks, domains and storage pools", exc) from None

    def _pools(self) -> tuple[SeenPool, ...]:
        """Storage pools; the volumes of the labs' (whose directory is under STORAGE_DIR/<lab>/)."""
        pools = []
        for pool in self.conn.listAllStoragePools():
            with _unless_gone(libvirt.VIR_ERR_NO_STORAGE_POOL):
                path = etree.fromstring(pool.XMLDesc(0).encode()).findtext("target/path") or ""
                parts = path.removeprefix(f"{STORAGE_DIR}/").split("/") if path.startswith(f"{STORAGE_DIR}/") else []
                lab = parts[0] if len(parts) == 2 else None
                active = bool(pool.isActive())
                volumes = []
                if lab is not None and active:
                    pool.refresh(0)  # volumes qemu-img wrote (an image's copy) are listed once the pool is refreshed
                    for vol in pool.listAllVolumes():
                        with _unless_gone(libvirt.VIR_ERR_NO_STORAGE_VOL):
                            xml = etree.fromstring(vol.XMLDesc(0).encode())
                            volumes.append(SeenVolume(vol.name(), vol.info()[1], xml.find("target/format").get("type", "")
                                                      if xml.find("target/format") is not None else "",
                                                      xml.findtext("backingStore/path")))
                pools.append(SeenPool(pool.name(), lab, path, active, tuple(sorted(volumes, key=lambda v: v.name))))
        return tuple(sorted(pools, key=lambda p: p.name))

    def _failed(self, what: str, exc) -> HostError:
        """A libvirt error as one sentence: a connection its keepalive closed is libvirtd not answering."""
        if not self.conn.isAlive():
            return hung("libvirt", what)
        return HostError(f"libvirt could not {what}: {exc.get_error_message()}")

    def _observe(self) -> tuple[tuple[SeenNetwork, ...], tuple[SeenDomain, ...]]:
        networks = []
        for net in self.conn.listAllNetworks():
            with _unless_gone(libvirt.VIR_ERR_NO_NETWORK):  # undefined since the listing: not there
                xml = net.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE)
                meta = metadata_of(xml)
                bridge = etree.fromstring(xml.encode()).find("bridge")
                networks.append(SeenNetwork(net.name(), meta.get("name"), bridge.get("name", "") if bridge is not None else "",
                                            meta.get("digest", ""), bool(net.isActive()),
                                            readback.network(xml) if meta.get("name") else None))
        domains = []
        for dom in self.conn.listAllDomains():
            with _unless_gone(libvirt.VIR_ERR_NO_DOMAIN):
                inactive = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
                meta = metadata_of(inactive)
                live = etree.fromstring(dom.XMLDesc(0).encode())
                ifnames = tuple(t.get("dev") for t in live.findall("devices/interface/target") if t.get("dev"))
                builtin = (live.findtext("os/kernel") or "").startswith(f"{IMAGES}/")
                domains.append(SeenDomain(dom.name(), meta.get("name"), meta.get("digest", ""), bool(dom.isActive()), ifnames,
                                          int(live.findtext("vcpu") or 0),
                                          readback.domain(inactive) if meta.get("name") else None, builtin,
                                          inactive if meta.get("name") else ""))
        return tuple(sorted(networks, key=lambda n: n.name)), tuple(sorted(domains, key=lambda d: d.name))

    def domain(self, name: str):
        try:
            return self.conn.lookupByName(name)
        except libvirt.libvirtError:
            return None

    # networks ---------------------------------------------------------------

    def create_network(self, xml: str) -> None:
        net = self._call("define network", self.conn.networkDefineXML, xml)
        if not net.isActive():
            self._call(f"start network {net.name()}", net.create)

    def start_network(self, name: str) -> None:
        net = self._call(f"find network {name}", self.conn.networkLookupByName, name)
        if not net.isActive():
            self._call(f"start network {name}", net.create)

    def delete_network(self, name: str, lab: str) -> None:
        try:
            net = self.conn.networkLookupByName(name)
        except libvirt.libvirtError:
            return
        self._check_owner(name, net.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE), lab)
        if net.isActive():
            self._call(f"stop network {name}", net.destroy)
        self._call(f"undefine network {name}", net.undefine)

    # domains ----------------------------------------------------------------

    def ifnames(self, name: str) -> list[str]:
        """The host-side devices (taps, vnetN) of a running domain's NICs (none if it is not running)."""
        dom = self.domain(name)
        if dom is None or not dom.isActive():
            return []
        live = etree.fromstring(dom.XMLDesc(0).encode())
        return [t.get("dev") for t in live.findall("devices/interface/target") if t.get("dev")]

    def create_domains(self, docs: list[str], say=print, start: set[str] | None = None) -> None:
        """Define domains and start them (those named in `start`, or all), in parallel; every
        failure is reported, none hidden."""
        def one(xml: str) -> None:
            dom = self._call("define domain", self.conn.defineXML, xml)
            if start is not None and dom.name() not in start:
                say(f"  defined {dom.name()} (powered off)")
                return
            if not dom.isActive():
                self._call(f"start domain {dom.name()}", dom.create)
            say(f"  started {dom.name()}")

        self._parallel(one, docs)

    def stop_domains(self, names: list[str]) -> None:
        """Power domains off (AHV's vm.off: not a guest shutdown), in parallel."""
        def one(name: str) -> None:
            dom = self._call(f"find domain {name}", self.conn.lookupByName, name)
            if dom.isActive():
                self._call(f"stop domain {name}", dom.destroy)

        self._parallel(one, names)

    def save_domains(self, files: dict[str, str], lab: str, while_saved=None) -> dict[str, float]:
        """libvirt's save of each running domain's memory and device state to its file (the guest
        stops), `while_saved(name)` (its disks copied while nothing writes them), and libvirt's
        restore of it at once: the guest runs on from where it was. Returns each guest's pause (s)."""
        paused: dict[str, float] = {}

        def one(name: str) -> None:
            dom = self._call(f"find domain {name}", self.conn.lookupByName, name)
            self._check_owner(name, dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE), lab)
            started = time.monotonic()
            self._call(f"save domain {name}", dom.saveFlags, files[name], None, libvirt.VIR_DOMAIN_SAVE_RUNNING)
            try:
                if while_saved is not None:
                    while_saved(name)
            finally:
                self._call(f"resume domain {name} from its save", self.conn.restoreFlags, files[name], None,
                           libvirt.VIR_DOMAIN_SAVE_RUNNING)
            paused[name] = time.monotonic() - started

        self._parallel(one, list(files))
        return paused

    def restore_domains(self, files: dict[str, str]) -> None:
        """libvirt's restore of domains from their save files, running (their definitions exist, inactive)."""
        def one(name: str) -> None:
            self._call(f"restore domain {name}", self.conn.restoreFlags, files[name], None, libvirt.VIR_DOMAIN_SAVE_RUNNING)

        self._parallel(one, list(files))

    def hypervisor(self) -> dict[str, str]:
        """What a save file depends on: libvirt's and QEMU's versions, the host's CPU model."""
        def text(version: int) -> str:
            return f"{version // 1000000}.{version // 1000 % 1000}.{version % 1000}"

        cpu = etree.fromstring(self.conn.getCapabilities().encode()).findtext("host/cpu/model") or ""
        return {"libvirt": text(self.conn.getLibVersion()), "qemu": text(self.conn.getVersion()), "cpu": cpu}

    def update_live(self, name: str, live, lab: str) -> float | None:
        """A running domain given its new definition without a restart (livechange.LiveChange):
        disks plugged in or out, CD-ROM media swapped, or its NICs moved to other bridges (a live
        migration; returns how long the guest was paused)."""
        dom = self._call(f"find domain {name}", self.conn.lookupByName, name)
        self._check_owner(name, dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE), lab)
        live_only = libvirt.VIR_DOMAIN_AFFECT_LIVE
        for xml in live.detach:
            self._call(f"unplug a disk from {name}", dom.detachDeviceFlags, xml, live_only)
        for xml in live.update:
            self._call(f"change a CD-ROM of {name}", dom.updateDeviceFlags, xml, live_only)
        for xml in live.attach:
            self._call(f"plug a disk into {name}", dom.attachDeviceFlags, xml, live_only)
        paused = self._move(dom, dict(live.moves), lab) if live.moves else None
        self._call(f"define domain {name}", self.conn.defineXML, live.xml)
        return paused

    def _move(self, dom, bridges: dict[str, str], lab: str) -> float:
        """The running domain saved (memory and devices) and restored with its NICs on `bridges`
        (by MAC): libvirt's way to change what a running QEMU plugs into; the guest only pauses."""
        root = etree.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE | libvirt.VIR_DOMAIN_XML_MIGRATABLE).encode())
        for iface in root.findall("devices/interface"):
            mac = iface.find("mac").get("address").lower()
            if mac in bridges:
                iface.find("source").set("bridge", bridges[mac])
        moved = etree.tostring(root, encoding="unicode")
        image = Path(f"{RUN_DIR}/{lab}/{dom.UUIDString()}.migrating")
        name = dom.name()
        started = time.monotonic()
        self._call(f"pause and save {name}", dom.saveFlags, str(image), moved, libvirt.VIR_DOMAIN_SAVE_RUNNING)
        try:
            self._call(f"restore {name} on its new node", self.conn.restoreFlags, str(image), None,
                       libvirt.VIR_DOMAIN_SAVE_RUNNING)
        except HostError as exc:
            try:  # where it was, then: the guest is not lost
                self.conn.restoreFlags(str(image), None, libvirt.VIR_DOMAIN_SAVE_RUNNING)
            except libvirt.libvirtError:
                raise HostError(f"{exc}; its saved state is kept in {image} (virsh restore {image})") from None
            raise
        image.unlink(missing_ok=True)
        return time.monotonic() - started

    def reset_domain(self, name: str) -> None:
        """Reset a running domain, as pressing its reset button (AHV's vm.reset)."""
        dom = self._call(f"find domain {name}", self.conn.lookupByName, name)
        self._call(f"reset domain {name}", dom.reset, 0)

    def suspend_domain(self, name: str) -> None:
        dom = self._call(f"find domain {name}", self.conn.lookupByName, name)
        self._call(f"pause domain {name}", dom.suspend)

    def resume_domain(self, name: str) -> None:
        dom = self._call(f"find domain {name}", self.conn.lookupByName, name)
        self._call(f"resume domain {name}", dom.resume)

    def is_active(self, name: str) -> bool:
        dom = self.domain(name)
        return bool(dom is not None and dom.isActive())

    def start_domains(self, names: list[str], say=print) -> None:
        def one(name: str) -> None:
            dom = self._call(f"find domain {name}", self.conn.lookupByName, name)
            if not dom.isActive():
                self._call(f"start domain {name}", dom.create)
            say(f"  started {name}")

        self._parallel(one, names)

    def delete_domains(self, names: list[str], lab: str) -> None:
        def one(name: str) -> None:
            dom = self.domain(name)
            if dom is None:
                return
            self._check_owner(name, dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE), lab)
            if dom.isActive():
                try:
                    dom.destroy()
                except libvirt.libvirtError:
                    if dom.isActive():
                        raise
            # NVRAM: a UEFI guest's variable store is the domain's own (libvirt made it from OVMF's template)
            self._call(f"undefine domain {name}", dom.undefineFlags, libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)

        self._parallel(one, names)

    # helpers ----------------------------------------------------------------

    def _parallel(self, fn, items) -> None:
        if not items:
            return
        with ThreadPoolExecutor(max_workers=min(8, len(items))) as pool:
            futures = [pool.submit(fn, item) for item in items]
        errors = [f.exception() for f in futures if f.exception() is not None]
        if len(errors) > 1 and all(isinstance(e, HostError) for e in errors):
            raise HostError("; ".join(str(e) for e in errors))  # every failure, none hidden
        if errors:
            raise errors[0]

    def _call(self, what: str, fn, *args):
        try:
            return fn(*args)
        except libvirt.libvirtError as exc:
            raise self._failed(what, exc) from None

    @staticmethod
    def _check_owner(name: str, xml: str, lab: str) -> None:
        if metadata_of(xml).get("name") != lab:
            raise HostError(f"{name} is not lab {lab}'s (no labkit mark for it); labkit leaves it alone")


@contextlib.contextmanager
def _unless_gone(code: int):
    """Skip an object another process removed between libvirt's listing and our reading of it."""
    try:
        yield
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != code:
            raise
