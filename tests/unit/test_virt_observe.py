"""Observing libvirt while another process removes objects: what is gone between the listing and
the reading is not there, not an internal error (issue 11, item 3). libvirt's objects are stood in
for by minimal ones here: what is tested is the adapter's reading, not libvirt."""

from __future__ import annotations

import libvirt
import pytest

from labkit.errors import HostError
from labkit.host.virt import Virt


def gone(code: int) -> libvirt.libvirtError:
    exc = libvirt.libvirtError("gone")
    exc.err = (code, 0, "gone", 0, "", None, None, 0, 0)
    return exc


class Object:
    def __init__(self, name: str, xml: str | None, code: int = 0):
        self._name, self.xml, self.code = name, xml, code

    def name(self):
        return self._name

    def XMLDesc(self, _flags=0):
        if self.xml is None:
            raise gone(self.code)
        return self.xml

    def isActive(self):
        return 1


class Conn:
    def __init__(self, networks, domains, alive=True, pools=()):
        self.networks, self.domains, self.alive, self.pools = networks, domains, alive, list(pools)

    def isAlive(self):
        return self.alive

    def listAllNetworks(self):
        return self.networks

    def listAllDomains(self):
        return self.domains

    def listAllStoragePools(self):
        return self.pools


def virt_on(conn) -> Virt:
    virt = Virt.__new__(Virt)
    virt.conn = conn
    return virt


def test_objects_undefined_after_the_listing_are_skipped():
    conn = Conn([Object("gone-net", None, libvirt.VIR_ERR_NO_NETWORK), Object("net", "<network><bridge name='b'/></network>")],
                [Object("gone-dom", None, libvirt.VIR_ERR_NO_DOMAIN), Object("dom", "<domain><devices/></domain>")],
                pools=[Object("gone-pool", None, libvirt.VIR_ERR_NO_STORAGE_POOL),
                       Object("pool", "<pool type='dir'><target><path>/srv/p</path></target></pool>")])
    networks, domains, pools = virt_on(conn).observe()
    assert [n.name for n in networks] == ["net"] and [d.name for d in domains] == ["dom"]
    assert [(p.name, p.lab) for p in pools] == [("pool", None)]


def test_other_libvirt_errors_still_surface_as_one_sentence():
    conn = Conn([], [Object("broken", None, libvirt.VIR_ERR_INTERNAL_ERROR)])
    with pytest.raises(HostError, match="^libvirt could not read the host's networks, domains and storage pools: gone$"):
        virt_on(conn).observe()


def test_a_connection_its_keepalive_closed_is_libvirtd_not_answering():
    conn = Conn([], [Object("broken", None, libvirt.VIR_ERR_INTERNAL_ERROR)], alive=False)
    with pytest.raises(HostError, match=r"^libvirt did not answer within \d+ s \(read the host's networks, domains and storage pools\); "
                                        r"check that libvirtd \(virsh list\) runs and answers"):
        virt_on(conn).observe()
