"""Apply's domain step when one domain of a batch fails to start (issue 12, item 4): the siblings
that did start still lose IPv6 on their taps, and the failure still stops lab.up. The adapters
here stand in for libvirt and netlink: what is tested is apply's order of steps."""

from __future__ import annotations

from dataclasses import replace

import pytest

from labkit import model, pipeline, render
from labkit.apply import Applier
from labkit.errors import HostError
from labkit.plan import Action


class BatchWithOneFailure:
    """create_domains starts every domain but `broken`, then reports the failure."""

    def __init__(self, broken: str):
        self.broken, self.running = broken, set()

    def create_domains(self, docs, say=print, start=None):
        self.running = {name for name in start if name != self.broken}
        raise HostError(f"cannot start domain {self.broken} (test)")

    def ifnames(self, name):
        return [f"tap-{name}"] if name in self.running else []


class Netlink:
    def __init__(self):
        self.no_ipv6 = []

    def disable_ipv6(self, name):
        self.no_ipv6.append(name)


def test_siblings_of_a_domain_that_failed_lose_ipv6_on_their_taps(tmp_path):
    lab = model.resolve(pipeline.load(None))
    lab = replace(lab, domains=tuple(replace(d, serial_log=str(tmp_path / f"{d.name}.log"),
                                             agent_socket=str(tmp_path / f"{d.name}.sock")) for d in lab.domains))
    cvm, uvm = (d.name for d in lab.domains)
    virt, netlink = BatchWithOneFailure(broken=cvm), Netlink()
    docs = render.render_all(lab, render.Adaptation())
    applier = Applier(None, netlink, virt, say=lambda _m: None)
    applier.lab_name, applier.lab = lab.name, lab
    with pytest.raises(HostError, match=f"cannot start domain {cvm}"):
        applier._create_domain([Action("create", "domain", cvm, obj=docs[cvm]), Action("create", "domain", uvm, obj=docs[uvm])])
    assert netlink.no_ipv6 == [f"tap-{uvm}"]
