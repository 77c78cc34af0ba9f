"""The baseline bench/run compares labkit with: the same lab built the way people build one by hand.

Every object labkit would make (the names, MACs, tags and kernel command lines come from labkit's
own resolved model, so the two build the same thing) is made with the tools an engineer types:
`ip` per namespace, link, address and route, `ovs-vsctl` per bridge and port, `virsh` per libvirt
network, `virt-install` per domain; then it waits until every guest prints its boot marker on its
serial console. `down` removes it the same way. Each command is one process, as at a shell.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

from labkit import render
from labkit.model import Domain, Lab


class Baseline:
    def __init__(self, lab: Lab, adapt: render.Adaptation):
        self.lab, self.adapt = lab, adapt
        self.commands: Counter[str] = Counter()

    def sh(self, *cmd: str, check: bool = True) -> None:
        self.commands[cmd[0]] += 1
        run = subprocess.run(cmd, capture_output=True, text=True)
        if check and run.returncode:
            raise RuntimeError(f"{' '.join(cmd)}: {run.stderr.strip()[-300:]}")

    # up ---------------------------------------------------------------------

    def up(self, timeout: float = 600) -> None:
        lab = self.lab
        for ns in lab.namespaces:
            self.sh("ip", "netns", "add", ns.name)
            self.sh("ip", "-n", ns.name, "link", "set", "lo", "up")
        for veth in lab.veths:
            if veth.netns:
                self.sh("ip", "link", "add", veth.peer, "mtu", str(veth.mtu), "type", "veth", "peer", "name", veth.name,
                        "netns", veth.netns)
                self.sh("ip", "-n", veth.netns, "link", "set", veth.name, "up")
                for cidr in veth.addresses:
                    self.sh("ip", "-n", veth.netns, "addr", "add", cidr, "dev", veth.name)
            else:
                self.sh("ip", "link", "add", veth.peer, "mtu", str(veth.mtu), "type", "veth", "peer", "name", veth.name)
                self.sh("ip", "link", "set", veth.name, "up")
            self.sh("ip", "link", "set", veth.peer, "up")
        for bridge in lab.linux_bridges:
            self.sh("ip", "link", "add", bridge.name, "type", "bridge")
            self.sh("ip", "link", "set", bridge.name, "up")
        for veth in lab.veths:
            if veth.peer_master:
                self.sh("ip", "link", "set", veth.peer, "master", veth.peer_master)
        for ns in lab.namespaces:
            for dest, gateway in ns.routes:
                self.sh("ip", "-n", ns.name, "route", "add", dest, "via", gateway)
        for bridge in lab.bridges:
            self.sh("ovs-vsctl", "add-br", bridge.name, "--", "set", "bridge", bridge.name,
                    f"datapath_type={bridge.datapath_type}")
            for port in bridge.ports:
                settings = [f"tag={port.tag}"] if port.tag is not None else []
                settings += [f"trunks={','.join(map(str, port.trunks))}"] if port.trunks else []
                settings += [f"vlan_mode={port.vlan_mode}"] if port.vlan_mode else []
                settings += [f"bond_mode={port.bond_mode}"] if port.bond_mode else []
                settings += [f"lacp={port.lacp}"] if port.lacp else []
                settings += [f"other_config:{k}={v}" for k, v in port.other_config]
                if len(port.interfaces) > 1:
                    self.sh("ovs-vsctl", "add-bond", bridge.name, port.name, *(i.name for i in port.interfaces), *settings)
                else:
                    self.sh("ovs-vsctl", "add-port", bridge.name, port.name, *settings)
                for iface in port.interfaces:
                    if iface.mtu_request:
                        self.sh("ovs-vsctl", "set", "interface", iface.name, f"mtu_request={iface.mtu_request}")
        with tempfile.TemporaryDirectory() as tmp:
            for net in lab.networks:
                path = Path(tmp) / f"{net.name}.xml"
                path.write_text(render.render_network(net, lab, self.adapt))
                self.sh("virsh", "-c", "qemu:///system", "net-define", str(path))
                self.sh("virsh", "-c", "qemu:///system", "net-start", net.name)
        for dom in lab.domains:
            Path(dom.serial_log).parent.mkdir(parents=True, exist_ok=True)
            Path(dom.serial_log).unlink(missing_ok=True)
            Path(dom.agent_socket).parent.mkdir(parents=True, exist_ok=True)
            self.sh(*self.virt_install(dom))
        self.wait_for_markers(timeout)

    def virt_install(self, dom: Domain) -> list[str]:
        """virt-install for a domain as labkit renders it (the extras go through --xml, as a person
        would look them up)."""
        cmd = ["virt-install", "--name", dom.name, "--uuid", dom.uuid, "--memory", str(dom.memory_mib),
               "--vcpus", str(dom.vcpus), "--virt-type", self.adapt.domain_type, "--machine", "pc",
               "--boot", f"kernel={dom.kernel},initrd={dom.initrd},kernel_args={render.kernel_cmdline(dom, self.adapt)}",
               "--osinfo", "detect=on,require=off", "--disk", "none", "--install", "no_install=yes",
               "--serial", f"pty,log.file={dom.serial_log}",
               "--channel", f"unix,mode=bind,path={dom.agent_socket},target.type=virtio,name={render.AGENT_CHANNEL}",
               "--sound", "none", "--controller", "usb,model=none", "--noautoconsole",
               "--memballoon", "virtio,freePageReporting=on" if self.adapt.lean else "virtio"]
        cmd += ["--graphics", "vnc,listen=127.0.0.1", "--video", "cirrus"] if dom.role == "cvm" else \
            ["--graphics", "none", "--video", "none"]
        for index, nic in enumerate(dom.nics, start=1):
            if nic.kind == "ovs":
                spec = (f"bridge={nic.source},virtualport.type=openvswitch,virtualport.parameters.interfaceid="
                        f"{nic.interfaceid},mac={nic.mac},model=virtio")
                spec += f",target.dev={nic.target}" if nic.target else ""
            else:
                spec = f"network={nic.source},mac={nic.mac},model=virtio"
            cmd += ["--network", spec]
            if self.adapt.lean:
                cmd += ["--xml", f"./devices/interface[{index}]/rom/@enabled=no"]
            for tag_index, tag in enumerate(nic.vlans, start=1):
                cmd += ["--xml", f"./devices/interface[{index}]/vlan/tag[{tag_index}]/@id={tag}"]
            if nic.trunk:
                cmd += ["--xml", f"./devices/interface[{index}]/vlan/@trunk=yes"]
        if self.adapt.tb_cache_mib:
            cmd += ["--xml", f"./features/tcg/tb-cache={self.adapt.tb_cache_mib}", "--xml", "./features/tcg/tb-cache/@unit=MiB"]
        return cmd

    def wait_for_markers(self, timeout: float) -> None:
        """Until every guest's serial console says `labkit: <hostname> up` (what a person watches for)."""
        deadline = time.monotonic() + timeout
        waiting = {d.serial_log: f"labkit: {d.hostname} up".encode() for d in self.lab.domains}
        while waiting:
            for log, marker in list(waiting.items()):
                try:
                    if marker in Path(log).read_bytes():
                        del waiting[log]
                except FileNotFoundError:
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"baseline: no boot marker in {', '.join(waiting)}")
            time.sleep(0.02)

    # down -------------------------------------------------------------------

    def down(self) -> None:
        lab = self.lab
        for dom in lab.domains:
            self.sh("virsh", "-c", "qemu:///system", "destroy", dom.name, check=False)
            self.sh("virsh", "-c", "qemu:///system", "undefine", dom.name, check=False)
        for net in lab.networks:
            self.sh("virsh", "-c", "qemu:///system", "net-destroy", net.name, check=False)
            self.sh("virsh", "-c", "qemu:///system", "net-undefine", net.name, check=False)
        for bridge in lab.bridges:
            self.sh("ovs-vsctl", "--if-exists", "del-br", bridge.name)
        for veth in lab.veths:
            self.sh("ip", "link", "del", veth.peer, check=False)
        for bridge in lab.linux_bridges:
            self.sh("ip", "link", "del", bridge.name, check=False)
        for ns in lab.namespaces:
            self.sh("ip", "netns", "del", ns.name, check=False)
        for dom in lab.domains:  # the directories up made for the consoles and agent sockets
            for made in (Path(dom.serial_log).parent, Path(dom.agent_socket).parent.parent):
                shutil.rmtree(made, ignore_errors=True)
