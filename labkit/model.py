"""The resolved lab: every concrete object with its final name (pure, no I/O).

`resolve(topology, facts)` decides every bridge, port, bond, tag, veth,
namespace, libvirt network and domain.  `facts` says which names foreign
objects already hold on this host, so AHV names (br0, virbr0, eth0,
NTNX-Local-Network, ...) fall back deterministically where taken; with no
facts (`HostFacts()`), the lab looks exactly like an AHV node.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

from . import ipam, ledger, names
from .impair import Impairment
from .paths import DISK_DIR, IMAGE_DIR, LOG_DIR, STORAGE_DIR, acli_socket, agent_socket

if TYPE_CHECKING:  # the topology's pydantic models: imported by whoever parses one, not by every reader of the model
    from .topology import Bond, Node, Topology

LOCAL_SUBNET = ipaddress.IPv4Network("192.168.5.0/24")
LOCAL_HOST_IP = "192.168.5.1/24"
CVM_LOCAL_IPS = ("192.168.5.2/25", "192.168.5.254/24")  # eth1 and eth1:1 on the seed's CVM

# Sizing profiles (DESIGN.md): `lab` fits a laptop, `fidelity` is AHV's.
LAB_CVM_MIB, LAB_CVM_VCPUS = 256, 1

KV = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class HostFacts:
    """What the host says that resolve must respect: names held by others, and the datapath."""

    taken_links: frozenset[str] = frozenset()  # interface names in the workstation's namespace
    taken_bridges: frozenset[str] = frozenset()  # OVS bridges, and Linux bridges
    taken_networks: frozenset[str] = frozenset()  # libvirt network names
    taken_domains: frozenset[str] = frozenset()  # libvirt domain names
    datapath_type: Literal["system", "netdev"] = "system"
    own_names: frozenset[str] = frozenset()  # names of the lab's objects on the host now: a fallback it holds, it keeps
    uefi: bool = False  # OVMF is installed: uefi_boot VMs start under UEFI
    netem: bool = True  # the kernel has netem: impairments other than a rate are applied

    def taken_ifnames(self) -> frozenset[str]:
        return self.taken_links | self.taken_bridges


# --------------------------------------------------------------------------- OVS


@dataclass(frozen=True)
class OvsInterface:
    name: str
    type: str = ""  # "" (system device), "internal", "vxlan", "patch"
    options: KV = ()
    mtu_request: int | None = None


@dataclass(frozen=True)
class OvsPort:
    """An OVS Port row and its Interfaces: exactly the fields plan compares with the host."""

    name: str
    interfaces: tuple[OvsInterface, ...]
    tag: int | None = None  # access VLAN (0: untagged frames only); None: no tag, OVS carries every VLAN
    trunks: tuple[int, ...] = ()
    vlan_mode: str | None = None
    bond_mode: str | None = None
    lacp: str | None = None
    other_config: KV = ()


@dataclass(frozen=True)
class OvsBridge:
    name: str
    role: Literal["node", "tor"]
    node: str | None
    datapath_type: str
    mtu: int
    ports: tuple[OvsPort, ...]
    ahv_name: str
    flows: tuple[str, ...] = ()  # OpenFlow rules of the lab's own (ovs-ofctl syntax, the lab's cookie)


# --------------------------------------------------------------------------- links and namespaces


@dataclass(frozen=True)
class Veth:
    """A veth pair, the same way round whatever it is for: `peer` is the end on the bridge the pair
    serves (a node's OVS bridge, the ToR, or `peer_master`), always in the workstation's namespace
    (OVS's userspace datapath needs it there); `name` is the far end: in `netns` with `addresses`
    (host, local, gateway, DHCP), or with `netns` None a port of the switch (an uplink's ToR end,
    the inter-switch link's second switch)."""

    name: str
    peer: str
    netns: str | None
    purpose: str
    mtu: int = 1500
    addresses: tuple[str, ...] = ()
    peer_master: str | None = None  # a Linux bridge the peer joins (the local network's)
    alias: str = ""  # marker (IFLA_IFALIAS) naming lab/node/purpose
    node: str | None = None
    uplink: str | None = None  # for uplinks: the AHV NIC name in the topology (eth2), whatever `peer` is called
    impaired: tuple[tuple[str, Impairment], ...] = ()  # (one of its ends, what that end's egress suffers)
    down: tuple[str, ...] = ()  # ends held down (lab.break's uplink down): never by the topology


@dataclass(frozen=True)
class LinuxBridge:
    """A Linux bridge in the workstation's namespace that labkit makes (the local network's virbr0):
    libvirt only points at it, so it adds no address and no firewall rule to the workstation."""

    name: str
    node: str
    alias: str  # marker (IFLA_IFALIAS) naming lab/node/purpose


@dataclass(frozen=True)
class Netns:
    name: str
    role: Literal["node", "gateway", "intruder"]  # intruder: a device lab.break plugs in (breaking.py)
    node: str | None
    routes: tuple[tuple[str, str], ...] = ()  # (destination, gateway)


@dataclass(frozen=True)
class DhcpSubnet:
    """One managed network as a node's DHCP server serves it, on an interface of its own."""

    network: str
    vlan: int
    ifname: str  # in the node namespace
    server: str  # the DHCP server address
    subnet: str
    gateway: str
    dns: tuple[str, ...] = ()
    domain_name: str | None = None
    domain_search: tuple[str, ...] = ()
    tftp_server: str | None = None
    boot_file: str | None = None


@dataclass(frozen=True)
class DhcpServer:
    """The DHCP server of a node (dnsmasq in its namespace): one binding per IPAM NIC on the node."""

    node: str
    netns: str
    subnets: tuple[DhcpSubnet, ...]
    hosts: tuple[tuple[str, str, str], ...]  # (MAC, address, hostname)
    rogue: bool = False  # lab.break's rogue: broadcasts offers nobody asked for (labkit/rogue_dhcp.py), no dnsmasq


# --------------------------------------------------------------------------- libvirt


@dataclass(frozen=True)
class VirtNetwork:
    name: str
    kind: Literal["local", "ovs"]
    node: str
    bridge: str
    uuid: str
    ahv_name: str
    ip: str | None = None  # shown in the AHV-faithful rendering; lives in the node namespace on the host
    portgroup: str | None = None
    vlan_portgroups: tuple[tuple[str, int], ...] = ()  # (AHV network, VLAN) on this bridge


@dataclass(frozen=True)
class DomainNic:
    kind: Literal["ovs", "network"]
    source: str  # OVS bridge, or libvirt network
    mac: str
    target: str | None = None  # tap name; None lets libvirt pick vnetN, as on the seed's CVM
    interfaceid: str | None = None
    # VLANs as OVS spells them on the NIC's port, the one spelling labkit uses past the topology:
    # an access NIC has `tag` (0 too: untagged frames only, a user VM on AHV's VLAN 0); a trunk NIC
    # has `trunks` (its VLANs, tagged but for `native`); neither is a port without a tag, which OVS
    # lets carry every VLAN (AHV's CVM on an untagged host VLAN: vnet0 on the seed).
    tag: int | None = None
    trunks: tuple[int, ...] = ()
    mtu: int = 1500
    guest_name: str = ""  # eth0, eth1 inside the guest
    addresses: tuple[str, ...] = ()
    vlan_addresses: tuple[tuple[int, str], ...] = ()  # trunk NICs: (VLAN, cidr) on sub-interface <guest_name>.<VLAN>
    network: str | None = None  # the AHV network of an access NIC (of a trunk NIC: its native VLAN's)
    dhcp: bool = False  # on a managed network: the guest takes `addresses` by DHCP from its node
    native: int | None = None  # a trunk NIC's untagged VLAN (AHV's kTrunked NIC: its network's)

    @property
    def trunk(self) -> bool:
        return bool(self.trunks)

    @property
    def vlans(self) -> tuple[int, ...]:
        """Every VLAN the NIC carries (AHV's numbers)."""
        return self.trunks or (() if self.tag is None else (self.tag,))


@dataclass(frozen=True)
class DomainDisk:
    """A disk or CD-ROM of a domain at AHV's address (scsi.0: bus and index), as libvirt plugs it."""

    bus: str
    index: int
    target: str  # libvirt's device name (sda, hdc): a label; the address below is what the guest sees
    device: Literal["disk", "cdrom"]
    path: str | None  # the volume's file; None: an empty CD-ROM
    format: Literal["qcow2", "raw"] = "qcow2"
    readonly: bool = False
    serial: str = ""  # the vmdisk UUID, which the guest reads as the disk's serial (/dev/disk/by-id)
    boot: bool = False  # the VM's boot device


@dataclass(frozen=True)
class Domain:
    name: str
    uuid: str
    role: Literal["cvm", "uvm"]
    node: str
    memory_mib: int
    vcpus: int
    nics: tuple[DomainNic, ...]
    passthrough: tuple[str, ...] = ()
    locked_memory: bool = False
    hostname: str = ""
    gateway: str | None = None
    kernel: str = f"{IMAGE_DIR}/vmlinux"  # uncompressed: QEMU boots it through PVH
    initrd: str = f"{IMAGE_DIR}/initrd.img"
    serial_log: str = ""
    agent_socket: str = ""  # the agent channel's unix socket (paths.agent_socket)
    acli_socket: str = ""  # a CVM's acli channel (paths.acli_socket): `acli` typed in the CVM
    image: str | None = None  # the user's disk image (never written: the VM runs on `overlay`)
    overlay: str | None = None
    seed: str | None = None  # cloud-init NoCloud ISO
    power_on: bool = True  # off: defined, not running (acli vm.off)
    ahv_name: str = ""  # a user VM's name on AHV (acli, the API): any printable text; `name` derives from it
    cores: int = 1  # cores per socket (AHV's num_cores_per_vcpu); `vcpus` is every vCPU, sockets x cores
    disks: tuple[DomainDisk, ...] = ()
    firmware_boot: bool = False  # the firmware boots a disk cloned from a bootable image (or `boot_nic`), not labkit's kernel
    boot_nic: str | None = None  # the MAC of the NIC the firmware boots from (AHV's boot device kNetwork)
    uefi: bool = False  # AHV's uefi_boot: OVMF instead of SeaBIOS


# --------------------------------------------------------------------------- storage


@dataclass(frozen=True)
class Volume:
    """A file in the lab's storage container, named by its vmdisk UUID as AHV names them
    (.acropolis/vmdisk/<uuid>): an image's copy, a clone made over one, or a blank disk."""

    name: str
    capacity: int  # bytes, the size the guest sees
    format: Literal["qcow2", "raw"]
    purpose: str  # "image NAME", "disk scsi.0 of VM"
    source: str | None = None  # an image: the workstation's file it is copied from
    source_format: str | None = None
    backing: str | None = None  # a clone: the image volume under it (copy-on-write; never written)
    domain: str | None = None  # a VM's disk: its domain and target (a running domain's disk grows live)
    target: str | None = None


@dataclass(frozen=True)
class Pool:
    """AHV's storage container as a libvirt directory pool the lab owns (default-container-<id>)."""

    name: str
    path: str
    volumes: tuple[Volume, ...]

    def path_of(self, volume: str) -> str:
        return f"{self.path}/{volume}"


# --------------------------------------------------------------------------- the lab


@dataclass(frozen=True)
class Deviation:
    """Something that differs from AHV on this host, said once by up and listed by status."""

    what: str
    why: str

    def __str__(self) -> str:
        return f"{self.what}: {self.why}"


@dataclass(frozen=True)
class Lab:
    name: str
    profile: str
    bridges: tuple[OvsBridge, ...]
    veths: tuple[Veth, ...]
    namespaces: tuple[Netns, ...]
    networks: tuple[VirtNetwork, ...]
    domains: tuple[Domain, ...]
    deviations: tuple[Deviation, ...] = ()
    node_names: tuple[str, ...] = field(default=())
    linux_bridges: tuple[LinuxBridge, ...] = ()
    dhcp_servers: tuple[DhcpServer, ...] = ()
    pools: tuple[Pool, ...] = ()

    def running(self) -> Lab:
        """The lab as the network sees it: without the VMs powered off (acli vm.off)."""
        return replace(self, domains=tuple(d for d in self.domains if d.power_on))

    def domain(self, name: str) -> Domain:
        return next(d for d in self.domains if d.name == name)

    def uplinks(self, node: str) -> dict[str, Veth]:
        """A node's uplink veths by their topology name (eth2); the node's NIC is each one's `peer`."""
        return {v.uplink: v for v in self.veths if v.purpose == "uplink" and v.node == node}


# --------------------------------------------------------------------------- resolve


def resolve(topo: Topology, facts: HostFacts = HostFacts()) -> Lab:
    topo = ledger.assign(topo).topo  # every NIC a MAC, and every NIC of a managed network an address
    builder = _Builder(topo, facts)
    for index, node in enumerate(topo.nodes, start=1):
        builder.node(index, node)
    builder.switch()
    builder.storage()
    builder.user_vms()
    builder.dhcp()
    builder.impairments()
    return builder.lab()


class _Builder:
    def __init__(self, topo: Topology, facts: HostFacts):
        self.topo, self.facts, self.lab_name = topo, facts, topo.name
        self.bridges: list[OvsBridge] = []
        self.veths: list[Veth] = []
        self.linux_bridges: list[LinuxBridge] = []
        self.dhcp_servers: list[DhcpServer] = []
        self.namespaces: list[Netns] = []
        self.networks: list[VirtNetwork] = []
        self.domains: list[Domain] = []
        self.deviations: list[Deviation] = []
        self.node_bridges: dict[tuple[str, str], OvsBridge] = {}
        self.tor_ports: dict[str, list[OvsPort]] = {"a": [], "b": []}  # by top-of-rack switch
        self.used_ifnames: set[str] = set()
        self.used_macs: set[str] = set()
        self.pool: Pool | None = None

    # impairments ---------------------------------------------------------

    def impairments(self) -> None:
        """The topology's `impair:` on its uplinks' ends: the node's (`peer`), the switch's (`name`)."""
        from .impair import parse

        for place, spec in self.topo.impair.items():
            node, _, iface = place.partition("/")
            wanted = parse(spec.delay, spec.jitter, spec.loss, spec.rate, spec.duplicate, spec.corrupt)
            if wanted.needs_netem and not self.facts.netem:
                kept = wanted.replace_rate(0) != wanted and Impairment(rate_bps=wanted.rate_bps)
                self.deviations.append(Deviation(f"impair {place}", f"{wanted} needs netem, which this kernel lacks "
                                                                   f"(CONFIG_NET_SCH_NETEM): "
                                                                   + (f"only {kept} is applied" if kept else "not applied")))
                if not kept:
                    continue
                wanted = kept
            bond = next((b.bond for n in self.topo.nodes if n.name == node for b in n.bridges.values()
                         if b.bond is not None and b.bond.name == iface), None)
            uplinks = set(bond.interfaces) if bond is not None else {iface}
            for k, veth in enumerate(self.veths):
                if veth.purpose == "uplink" and veth.node == node and veth.uplink in uplinks:
                    ends = {"node": (veth.peer,), "tor": (veth.name,), "both": (veth.peer, veth.name)}[spec.side]
                    self.veths[k] = replace(veth, impaired=veth.impaired + tuple((end, wanted) for end in ends))

    # names ---------------------------------------------------------------

    def _claim(self, name: str) -> str:
        self.used_ifnames.add(name)
        return name

    def ahv_ifname(self, ahv: str, node: str, taken: frozenset[str], what: str) -> str:
        """The AHV name when no foreign object and no other node of this lab holds it, and the lab
        does not run under a fallback name already (names never flip under a running lab)."""
        blocked = taken | self.used_ifnames
        fallback, kept = self._salted(lambda salt: names.fallback(ahv, self.lab_name, node, salt=salt), blocked)
        if ahv in blocked:
            reason = "held by another node of this lab" if ahv in self.used_ifnames else "held by another owner on this host"
            self.deviations.append(Deviation(f"{what} {ahv}", f"named {fallback}: {ahv} is {reason}"))
            return self._claim(fallback)
        if kept:
            self.deviations.append(Deviation(f"{what} {ahv}", f"named {fallback}: the lab got this name while {ahv} "
                                                              f"was held, and keeps it until lab.down"))
            return self._claim(fallback)
        return self._claim(ahv)

    def lab_ifname(self, *parts: str) -> str:
        """A lab-private name, `<lab>-<parts>`. Plain joins can meet another lab's (lab a's uplink
        `tor` on node 1, lab a-n1's switch) and cut names can collide: such names are salted."""
        full = "-".join((self.lab_name,) + parts)
        name, _ = self._salted(lambda salt: names.fit(full, salt), self.facts.taken_ifnames() | self.used_ifnames)
        return self._claim(name)

    def _salted(self, candidate, blocked: frozenset[str]) -> tuple[str, bool]:
        """(name, kept) from `candidate(salt)`, salt 0, 1, ...: one the lab already runs under if any
        of the first few is (kept: a name never flips under a running lab), else the first one free."""
        for salt in range(4):
            if (name := candidate(salt)) in self.facts.own_names and name not in blocked:
                return name, True
        salt = 0
        while (name := candidate(salt)) in blocked:
            salt += 1
        return name, False

    def global_name(self, ahv: str, node: str, taken: frozenset[str], used: set[str], what: str) -> str:
        fallback = f"{ahv}-{self.lab_name}-{node}"
        if ahv not in used and ahv not in taken and fallback in self.facts.own_names and fallback not in taken:
            name = fallback  # the lab runs under it: it keeps it until lab.down, whoever frees the AHV name
            self.deviations.append(Deviation(f"{what} {ahv}", f"named {name}: the lab got this name while {ahv} "
                                                              f"was used, and keeps it until lab.down"))
        elif ahv in taken or ahv in used:
            name = fallback
            self.deviations.append(Deviation(f"{what} {ahv}", f"named {name}: {ahv} is already used on this host"))
        else:
            name = ahv
        used.add(name)
        return name

    def mac(self, oui: str, *parts: str) -> str:
        bump = 0
        while (value := names.mac(oui, self.lab_name, *parts, bump=bump)) in self.used_macs:
            bump += 1
        self.used_macs.add(value)
        return value

    # nodes ---------------------------------------------------------------

    def node(self, index: int, node: Node) -> None:
        facts, lab = self.facts, self.lab_name
        n = f"n{index}"
        netns = names.netns(lab, node.name)
        self.namespaces.append(Netns(netns, "node", node.name, routes=(("default", self._host_gateway(node)),)))

        # Uplinks: the node end is the AHV NIC name; the far end plugs into the ToR.
        uplink_names: dict[str, str] = {}
        tor_ends: dict[str, str] = {}
        for uplink in node.uplinks:
            name = self.ahv_ifname(uplink, node.name, facts.taken_ifnames(), "uplink")
            uplink_names[uplink] = name
            tor_ends[uplink] = tor_end = self.lab_ifname(n, uplink)
            self.veths.append(Veth(tor_end, name, None, "uplink", mtu=self._uplink_mtu(node, uplink),
                                   alias=names.link_alias(lab, node.name, "uplink", uplink), node=node.name, uplink=uplink))
        switch_of = self._switch_of(node)
        for port in self._tor_ports(n, node, tor_ends):
            uplink = next((u for u, end in tor_ends.items() if end == port.name), None)
            self.tor_ports[switch_of.get(uplink, "a")].append(port)

        for bname, bridge in node.bridges.items():
            real = self.ahv_ifname(bname, node.name, facts.taken_ifnames(), "OVS bridge")
            ports: list[OvsPort] = []
            if bridge.bond is not None:
                # OVS port names are global to the switch daemon, so a second node's bond falls back too.
                bond_name = bridge.bond.name if len(bridge.bond.interfaces) == 1 else \
                    self.ahv_ifname(bridge.bond.name, node.name, facts.taken_ifnames(), "bond")
                ports.append(_bond_port(bridge.bond, bond_name, uplink_names, bridge.mtu))
            if bname == node.cvm.bridge:
                # The node's host identity: a veth whose far end is named br0 in the node namespace.
                host_port = self.lab_ifname(n, "host")
                tag = node.host_vlan or None
                ports.append(OvsPort(host_port, (OvsInterface(host_port, mtu_request=bridge.mtu),), tag=tag))
                self.veths.append(Veth("br0", host_port, netns, "host", mtu=bridge.mtu, addresses=(str(node.host_ip),),
                                       alias=names.link_alias(lab, node.name, "host")))
            ovs = OvsBridge(real, "node", node.name, facts.datapath_type, bridge.mtu, tuple(ports), bname)
            self.bridges.append(ovs)
            self.node_bridges[(node.name, bname)] = ovs
            ahv_net = "VM-Network" if bname == "br0" else f"VM-Network-{bname}"
            vm_net = self.global_name(ahv_net, node.name, facts.taken_networks, {x.name for x in self.networks}, "libvirt network")
            # One portgroup per AHV network on the bridge, with its VLAN: how the trainee finds them in virsh.
            groups = tuple((n.name, n.vlan) for n in self.topo.networks if n.bridge == bname)
            self.networks.append(VirtNetwork(vm_net, "ovs", node.name, real, names.uuid_for(lab, node.name, "net", bname),
                                             ahv_net, portgroup=ahv_net, vlan_portgroups=groups))

        # NTNX-Local-Network: a Linux bridge (virbr0) that labkit makes and the libvirt network points
        # at; 192.168.5.1/24 is on a veth end named virbr0 in the node namespace, whose peer joins it.
        local_bridge = self.ahv_ifname("virbr0", node.name, facts.taken_ifnames(), "local-network bridge")
        self.linux_bridges.append(LinuxBridge(local_bridge, node.name, names.link_alias(lab, node.name, "local-bridge")))
        local_net = self.global_name("NTNX-Local-Network", node.name, facts.taken_networks,
                                     {x.name for x in self.networks}, "libvirt network")
        self.networks.append(VirtNetwork(local_net, "local", node.name, local_bridge,
                                         names.uuid_for(lab, node.name, "net", "local"), "NTNX-Local-Network", ip=LOCAL_HOST_IP))
        local_peer = self.lab_ifname(n, "lnet")
        self.veths.append(Veth("virbr0", local_peer, netns, "local", addresses=(LOCAL_HOST_IP,), peer_master=local_bridge,
                               alias=names.link_alias(lab, node.name, "local")))
        self.cvm(node, self.node_bridges[(node.name, node.cvm.bridge)], local_net)

    def _host_gateway(self, node: Node) -> str:
        """The node's gateway: its own, or the switch's gateway on the host's VLAN (validation ensured one)."""
        return str(node.gateway or self.topo.switch.gateways[node.host_vlan].ip)

    def _uplink_mtu(self, node: Node, uplink: str) -> int:
        for bridge in node.bridges.values():
            if bridge.bond and uplink in bridge.bond.interfaces:
                return bridge.mtu
        return 1500

    def _switch_of(self, node: Node) -> dict[str, str]:
        """Which switch each uplink plugs into: all into a, or with `switch.pair` each bond's members
        alternately into a and b (unbonded uplinks into a)."""
        if not self.topo.switch.pair:
            return {}
        return {member: "ab"[i % 2] for bridge in node.bridges.values() if bridge.bond
                for i, member in enumerate(bridge.bond.interfaces)}

    def _trunk(self) -> dict:
        """A switch-to-switch or switch-to-node port: the switch's VLANs tagged, its native VLAN untagged."""
        switch = self.topo.switch
        vlan = dict(trunks=tuple(sorted(set(switch.vlans))))
        if switch.native_vlan != 0:
            vlan.update(tag=switch.native_vlan, vlan_mode="native-untagged")
        return vlan

    def _tor_ports(self, n: str, node: Node, tor_ends: dict[str, str]) -> list[OvsPort]:
        """The ToR ports facing a node: trunks of the switch's VLANs (native VLAN untagged); the
        members of a node's LACP bond form one LACP bond on the ToR too, as a real switch would."""
        vlan = self._trunk()
        ports, bonded = [], set()
        for bridge in node.bridges.values():
            bond = bridge.bond
            if bond is None or bond.lacp == "off" or not bond.switch_lacp or len(bond.interfaces) < 2:
                continue
            members = tuple(sorted((OvsInterface(tor_ends[m], mtu_request=bridge.mtu) for m in bond.interfaces), key=lambda i: i.name))
            other = (("lacp-fallback-ab", "true" if bond.lacp_fallback else "false"), ("lacp-time", bond.lacp_time))
            ports.append(OvsPort(self.lab_ifname(n, bond.name), members, bond_mode="balance-tcp", lacp="active",
                                 other_config=other, **vlan))
            bonded.update(bond.interfaces)
        for uplink, end in tor_ends.items():
            if uplink not in bonded:
                ports.append(OvsPort(end, (OvsInterface(end, mtu_request=self._uplink_mtu(node, uplink)),), **vlan))
        return ports

    def cvm(self, node: Node, bridge: OvsBridge, local_net: str) -> None:
        lab = self.lab_name
        fidelity = self.topo.profile == "fidelity"
        name = self.global_name(f"NTNX-{node.name}-CVM", node.name, self.facts.taken_domains,
                                {d.name for d in self.domains}, "CVM domain")
        cvm = node.cvm
        if cvm.vlan == node.host_vlan:
            gateway = self._host_gateway(node)
        else:  # the custom layout may put the CVM on its own VLAN: its gateway is that VLAN's
            gateway = str(self.topo.switch.gateways[cvm.vlan].ip) if cvm.vlan in self.topo.switch.gateways else None
        nics = (
            DomainNic("ovs", bridge.name, self.mac(names.CVM_OUI, node.name, "cvm", "0"),
                      interfaceid=names.uuid_for(lab, node.name, "cvm", "nic0"), tag=cvm.vlan or None,
                      mtu=bridge.mtu, guest_name="eth0", addresses=(str(cvm.ip),)),
            DomainNic("network", local_net, self.mac(names.CVM_OUI, node.name, "cvm", "1"), guest_name="eth1",
                      addresses=CVM_LOCAL_IPS),
        )
        self.domains.append(Domain(
            name, names.uuid_for(lab, node.name, "cvm"), "cvm", node.name,
            memory_mib=cvm.memory if fidelity else LAB_CVM_MIB, vcpus=cvm.vcpus if fidelity else LAB_CVM_VCPUS,
            nics=nics, passthrough=tuple(cvm.passthrough), locked_memory=True,
            hostname=f"NTNX-{node.name}-CVM", gateway=gateway, serial_log=f"{LOG_DIR}/{lab}/{name}.serial.log",
            agent_socket=agent_socket(lab, name), acli_socket=acli_socket(lab, name)))

    # switch --------------------------------------------------------------

    def switch(self) -> None:
        """The top-of-rack switch (`<lab>-tor`) with the VLANs' gateways; with `switch.pair` a second
        one (`<lab>-tor-b`, "tor-b") joined to it by an inter-switch link trunking every VLAN."""
        lab = self.lab_name
        ports = list(self.tor_ports["a"])
        for vlan, gw in sorted(self.topo.switch.gateways.items()):
            netns = names.netns(lab, f"gw{vlan}")
            outer = self.lab_ifname(f"gw{vlan}")
            self.namespaces.append(Netns(netns, "gateway", None))
            self.veths.append(Veth("eth0", outer, netns, "gateway", addresses=(str(gw),), alias=names.link_alias(lab, f"gw{vlan}")))
            ports.append(OvsPort(outer, (OvsInterface(outer),), tag=vlan))
        mtu = max((b.mtu for b in self.bridges), default=1500)
        second = list(self.tor_ports["b"])
        if self.topo.switch.pair:
            isl_a, isl_b = self.lab_ifname("isl", "a"), self.lab_ifname("isl", "b")
            self.veths.append(Veth(isl_b, isl_a, None, "isl", mtu=mtu, alias=names.link_alias(lab, "isl")))
            ports.append(OvsPort(isl_a, (OvsInterface(isl_a, mtu_request=mtu),), **self._trunk()))
            second.append(OvsPort(isl_b, (OvsInterface(isl_b, mtu_request=mtu),), **self._trunk()))
        self.bridges.append(OvsBridge(self.lab_ifname("tor"), "tor", None, self.facts.datapath_type, mtu, tuple(ports), "tor"))
        if self.topo.switch.pair:
            self.bridges.append(OvsBridge(self.lab_ifname("tor", "b"), "tor", None, self.facts.datapath_type, mtu,
                                          tuple(second), "tor-b"))

    # user VMs ------------------------------------------------------------

    def user_vms(self) -> None:
        lab = self.lab_name
        networks = {n.name: n for n in self.topo.networks}
        taken_taps = self.facts.taken_links
        self.used_macs |= {nic.mac for vm in self.topo.vms for nic in vm.nics if nic.mac}  # given ones are kept
        for vm in self.topo.vms:
            nics = []
            for index, nic in enumerate(vm.nics):
                net = networks.get(nic.network)
                bname = net.bridge if net else (nic.bridge or "br0")
                bridge = self.node_bridges[(vm.node, bname)]
                bump = 0
                while (tap := names.tap_name(lab, vm.name, str(index), bump=bump)) in taken_taps or tap in self.used_ifnames:
                    bump += 1
                self._claim(tap)
                if nic.trunk is None:
                    tag, trunks, native = net.vlan, (), None
                else:  # tagged VLANs; with a network, AHV's kTrunked NIC: the network's VLAN untagged
                    tag, trunks = None, tuple(sorted(set(nic.trunk) | ({net.vlan} if net else set())))
                    native = net.vlan if net else None
                mac = nic.mac or self.mac(names.UVM_OUI, vm.name, str(index))
                self.used_macs.add(mac)
                nics.append(DomainNic(
                    "ovs", bridge.name, mac, target=tap,
                    interfaceid=names.uuid_for(lab, vm.name, f"nic{index}"), tag=tag, trunks=trunks,
                    mtu=bridge.mtu, guest_name=f"eth{index}", addresses=(str(nic.ip),) if nic.ip else (),
                    vlan_addresses=tuple((v, str(a)) for v, a in sorted(nic.ips.items())),
                    network=nic.network, dhcp=bool(net and net.ip_config), native=native))
            name = self.global_name(names.domain_name(vm.name), vm.node, self.facts.taken_domains,
                                    {d.name for d in self.domains}, "VM")
            disks = self._disks(vm)
            if vm.uefi and not self.facts.uefi:
                self.deviations.append(Deviation(f"VM {vm.name}", "boots under SeaBIOS, not UEFI: OVMF is not installed "
                                                                  "(apt-get install ovmf; invoke host.bootstrap does)"))
            firmware_boot = self._boots_image(vm) or (vm.boot is not None and vm.boot in {n.mac for n in nics})
            files = dict(image=vm.image, overlay=f"{DISK_DIR}/{lab}/{name}.qcow2") if vm.image else {}
            if vm.image or firmware_boot:  # the guest's own OS reads its network settings from cloud-init's seed
                files["seed"] = f"{DISK_DIR}/{lab}/{name}-cidata.iso"
            self.domains.append(Domain(name, vm.uuid or names.uuid_for(lab, vm.name), "uvm", vm.node, vm.memory,
                                       vm.vcpus * vm.cores_per_vcpu, tuple(nics), hostname=self._hostname(vm.name),
                                       gateway=self._uvm_gateway(vm), ahv_name=vm.name, cores=vm.cores_per_vcpu,
                                       serial_log=f"{LOG_DIR}/{lab}/{name}.serial.log",
                                       agent_socket=agent_socket(lab, name), power_on=vm.power == "on",
                                       disks=disks, firmware_boot=firmware_boot,
                                       boot_nic=vm.boot if vm.boot in {n.mac for n in nics} else None,
                                       uefi=vm.uefi and self.facts.uefi, **files,
                                       # OVMF starts the bzImage through its EFI stub (it cannot take vmlinux's PVH entry)
                                       **({"kernel": f"{IMAGE_DIR}/vmlinuz"} if vm.uefi and self.facts.uefi else {})))
            self._attach_volumes(name, disks)

    # storage -------------------------------------------------------------

    def storage(self) -> None:
        """The lab's storage container: a volume per image (a qcow2 copy of a disk image, a raw copy
        of an ISO) and per disk (a copy-on-write clone over its image, or blank); CD-ROMs read their
        ISO's volume and have none of their own."""
        if not self.topo.images and not any(vm.disks for vm in self.topo.vms):
            return
        name = names.container_name(self.lab_name)
        path = f"{STORAGE_DIR}/{self.lab_name}/{name}"
        images = {im.name: im for im in self.topo.images}
        volumes = [Volume(im.vmdisk_uuid, im.size or 0, "qcow2" if im.type == "disk" else "raw", f"image {im.name}",
                          source=im.source, source_format=im.format) for im in self.topo.images]
        vmdisks = {d.uuid for vm in self.topo.vms for d in vm.disks if not d.cdrom}
        copies = []
        for vm in self.topo.vms:
            for disk in vm.disks:
                if disk.cdrom:
                    continue
                image = images.get(disk.image) if disk.image else None
                vol = Volume(disk.uuid, disk.size or (image.size if image else 0) or 0, "qcow2",
                             f"disk {disk.address} of {vm.name}", backing=f"{path}/{image.vmdisk_uuid}" if image else None)
                if disk.clone_of in vmdisks:  # a copy of a disk the lab has (once made, it stands alone)
                    copies.append(replace(vol, source=f"{path}/{disk.clone_of}", source_format="qcow2"))
                else:
                    volumes.append(vol)
        self.pool = Pool(name, path, tuple(volumes + copies))  # copies last: made from disks made before them

    def _disks(self, vm) -> tuple[DomainDisk, ...]:
        pool = self.pool
        images = {im.name: im for im in self.topo.images}
        out = []
        for disk in vm.disks:
            image = images.get(disk.image) if disk.image else None
            if disk.cdrom:
                path = pool.path_of(image.vmdisk_uuid) if image else None
                out.append(DomainDisk(disk.bus, disk.index, disk_target(disk.bus, disk.index), "cdrom", path, "raw",
                                      readonly=True, serial=disk.uuid, boot=vm.boot == disk.address))
            else:
                out.append(DomainDisk(disk.bus, disk.index, disk_target(disk.bus, disk.index), "disk",
                                      pool.path_of(disk.uuid), "qcow2", serial=disk.uuid,
                                      boot=vm.boot == disk.address or (vm.boot is None and self._boot_disk(vm) is disk)))
        return tuple(out)

    def _boot_disk(self, vm):
        """AHV's default boot device: the first disk (not a CD-ROM), by bus order of the BIOS."""
        return next((d for d in vm.disks if not d.cdrom), None)

    def _boots_image(self, vm) -> bool:
        """A VM runs its image's OS when its boot disk is a clone of a bootable disk image; with
        blank disks or a data image it runs labkit's guest, which sees them as its disks."""
        images = {im.name: im for im in self.topo.images}
        disk = next((d for d in vm.disks if d.address == vm.boot), None) if vm.boot else self._boot_disk(vm)
        image = images.get(disk.image) if disk is not None and disk.image else None
        return bool(image and image.type == "disk" and image.bootable)

    def _attach_volumes(self, domain: str, disks: tuple[DomainDisk, ...]) -> None:
        """Each disk volume knows its domain and target: a running domain's disk is grown live."""
        pool = self.pool
        if pool is None:
            return
        where = {d.path: d.target for d in disks if d.device == "disk"}
        self.pool = replace(pool, volumes=tuple(replace(v, domain=domain, target=where[pool.path_of(v.name)])
                                                if pool.path_of(v.name) in where else v for v in pool.volumes))

    def _hostname(self, ahv_name: str) -> str:
        """The guest's host name (its DHCP binding's too): one per VM of the lab."""
        used = {d.hostname for d in self.domains}
        name = names.hostname(ahv_name)
        return name if name not in used else f"{name[:58]}-{names.short(ahv_name)}"

    def _uvm_gateway(self, vm) -> str | None:
        """The default route of a VM with static addresses (a managed network's comes by DHCP)."""
        networks = {n.name: n for n in self.topo.networks}
        if any(nic.network and networks[nic.network].ip_config for nic in vm.nics):
            return None
        for nic in vm.nics:
            if nic.network and nic.ip:
                net = networks[nic.network]
                gw = self.topo.switch.gateways.get(net.vlan)
                if gw is not None and gw.ip in nic.ip.network:
                    return str(gw.ip)
        return None

    # DHCP for managed networks ------------------------------------------------

    def dhcp(self) -> None:
        """AHV's IPAM on each node: the node answers the DHCP requests of its VMs on managed networks.
        Per network, a veth from the node's bridge into the node namespace carries the DHCP server's
        address; OpenFlow rules on the bridge send a managed NIC's DHCP (and its packets for the
        server) there, never out on the VLAN, and drop the DHCP offers a VM sends."""
        lab = self.lab_name
        managed = [n for n in self.topo.networks if n.ip_config is not None]
        if not managed:
            return
        cookie = names.flow_cookie(lab)
        for index, node in enumerate(self.topo.nodes, start=1):
            netns = names.netns(lab, node.name)
            subnets, flows = [], {}
            for net in managed:
                ipc = net.ip_config
                bridge = self.node_bridges.get((node.name, net.bridge))
                if bridge is None:
                    continue
                server = ipam.dhcp_server(ipc)
                outer = self.lab_ifname(f"n{index}", f"d{net.vlan}")
                inner = f"dhcp{net.vlan}"
                self.veths.append(Veth(inner, outer, netns, "dhcp", addresses=(f"{server}/{ipc.network.prefixlen}",),
                                       alias=names.link_alias(lab, node.name, "dhcp", str(net.vlan)), node=node.name))
                port = OvsPort(outer, (OvsInterface(outer),), trunks=(net.vlan,), vlan_mode="trunk")
                subnets.append(DhcpSubnet(net.name, net.vlan, inner, str(server), str(ipc.network), str(ipc.gateway),
                                          tuple(map(str, ipc.dns)), ipc.domain_name, tuple(ipc.domain_search),
                                          ipc.tftp_server, ipc.boot_file))
                rules = flows.setdefault(bridge.name, [])
                rules.append(f"cookie={cookie},priority=300,in_port={outer},actions=mod_vlan_vid:{net.vlan},NORMAL")
                for dom in self.domains:
                    for nic in dom.nics:
                        if dom.node != node.name or nic.kind != "ovs" or nic.source != bridge.name:
                            continue
                        m = nic.mac
                        if nic.network == net.name and nic.dhcp:
                            # untagged frames only: a kTrunked NIC's tagged VLANs are other networks
                            match = f"cookie={cookie},priority=300,vlan_tci=0x0000/0x1fff"
                            rules += [f"{match},udp,dl_src={m},tp_src=68,tp_dst=67,actions=output:{outer}",
                                      f"{match},arp,dl_src={m},arp_tpa={server},actions=output:{outer}",
                                      f"{match},ip,dl_src={m},nw_dst={server},actions=output:{outer}",
                                      f"{match},udp,dl_src={m},tp_src=67,actions=drop"]
                        elif net.vlan in nic.trunks and nic.native != net.vlan:  # its offers tagged for the network
                            rules.append(f"cookie={cookie},priority=300,dl_vlan={net.vlan},udp,dl_src={m},tp_src=67,actions=drop")
                self._add_port(bridge.name, port)
            if subnets:
                hosts = tuple((nic.mac, nic.addresses[0].split("/")[0], dom.hostname) for dom in self.domains
                              if dom.node == node.name for nic in dom.nics if nic.dhcp and nic.addresses)
                self.dhcp_servers.append(DhcpServer(node.name, netns, tuple(subnets), hosts))
            for bname, rules in flows.items():
                self._set_flows(bname, tuple(rules))

    def _add_port(self, bname: str, port: OvsPort) -> None:
        self._replace_bridge(bname, lambda b: replace(b, ports=b.ports + (port,)))

    def _set_flows(self, bname: str, flows: tuple[str, ...]) -> None:
        self._replace_bridge(bname, lambda b: replace(b, flows=flows))

    def _replace_bridge(self, bname: str, change) -> None:
        for i, bridge in enumerate(self.bridges):
            if bridge.name == bname:
                self.bridges[i] = change(bridge)
                key = next(k for k, v in self.node_bridges.items() if v is bridge)
                self.node_bridges[key] = self.bridges[i]

    def lab(self) -> Lab:
        return Lab(self.lab_name, self.topo.profile, tuple(self.bridges), tuple(self.veths), tuple(self.namespaces),
                   tuple(self.networks), tuple(self.domains), tuple(self.deviations),
                   tuple(n.name for n in self.topo.nodes), tuple(self.linux_bridges), tuple(self.dhcp_servers),
                   (self.pool,) if self.pool else ())


def disk_target(bus: str, index: int) -> str:
    """libvirt's device name for AHV's disk address: scsi.N sd*, pci.N vd*, ide.N hd*, sata.N sd*
    past the SCSI names (both buses are sd to libvirt; the name is only a label)."""
    prefix, offset = {"scsi": ("sd", 0), "pci": ("vd", 0), "ide": ("hd", 0), "sata": ("sd", 256)}[bus]
    n, letters = index + offset, ""
    while True:
        letters = chr(ord("a") + n % 26) + letters
        n = n // 26 - 1
        if n < 0:
            return prefix + letters


def _bond_port(bond: Bond, name: str, uplink_names: dict[str, str], mtu: int) -> OvsPort:
    """AHV's bond settings (ahv-formats.md section 4) as OVS Port columns."""
    members = tuple(sorted((OvsInterface(uplink_names[m], mtu_request=mtu) for m in bond.interfaces), key=lambda i: i.name))
    if len(members) == 1:  # a single uplink is a plain port named after the NIC, as on AHV
        return OvsPort(members[0].name, members)
    other: dict[str, str] = {}
    if bond.lacp != "off":
        other["lacp-time"] = bond.lacp_time
        other["lacp-fallback-ab"] = "true" if bond.lacp_fallback else "false"
    if bond.mode == "balance-slb" and bond.rebalance_interval:
        other["bond-rebalance-interval"] = str(bond.rebalance_interval)
    return OvsPort(name, members, bond_mode=bond.mode, lacp=None if bond.lacp == "off" else bond.lacp,
                   other_config=tuple(sorted(other.items())))
