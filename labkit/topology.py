"""Parse and validate a topology file (the user's contract, DESIGN.md "Topology file").

Two passes, both collecting every problem before stopping (netlab's way):
pydantic checks shapes and types, then `crosscheck` checks what only the
whole file can tell (bond members that are not uplinks, networks that do not
exist, addresses outside their subnet).  Every problem carries file:line and
the key path, and says what would be valid.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, Strict, ValidationError

from . import ipam, names, values, yamlpos
from .errors import Problem, TopologyError
from .values import shown

DEFAULT_TOPOLOGY = "default.yaml"

# Every name pattern is used with fullmatch: `$` would also match before a trailing newline.
IFNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
IFNAME_MAX = 15  # IFNAMSIZ - 1, in bytes
LAB_NAME_RE = re.compile(r"[a-z][a-z0-9-]{0,11}")
HOST_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,31}")
PCI_RE = re.compile(r"[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]")
MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
SIZE_RE = re.compile(r"(\d+)\s*(MiB|GiB|M|G)")

Vlan = Annotated[int, Strict(), Field(ge=0, le=4094)]
Count = Annotated[int, Strict(), Field(ge=1, le=256)]


def _mebibytes(value: Any) -> Any:
    """'24GiB' / '256MiB' / 256 (MiB) -> MiB; anything else is left for pydantic to reject."""
    if isinstance(value, str):
        match = SIZE_RE.fullmatch(value.strip())
        if not match:
            raise ValueError(f"{shown(value)} is not a size; write it like 256MiB or 24GiB")
        number, unit = int(match.group(1)), match.group(2)
        return number * 1024 if unit.startswith("G") else number
    return value


def _mac(value: str) -> str:
    if not MAC_RE.fullmatch(value):
        raise ValueError(f"{shown(value)} is not a MAC address as labkit writes them; use lowercase hex, like 50:6b:8d:00:00:01")
    return value


MiB = Annotated[int, BeforeValidator(_mebibytes), Strict(), Field(ge=16, le=1024 * 1024)]
# A disk's size: 20G as acli writes it, or bytes; written back as acli would write it.
DiskBytes = Annotated[int, BeforeValidator(lambda v: values.disk_size(v) if isinstance(v, str) else v), Strict(),
                      Field(ge=values.DISK_MIN, le=values.DISK_MAX), PlainSerializer(values.size_text, return_type=str)]
Uuid = Annotated[str, Strict(), AfterValidator(values.uuid_text)]
# Values that reach other programs (dnsmasq's configuration, qemu-img's command line, XML) are
# checked for them here, at the model's edge: a topology file, acli and the API alike.
DnsName = Annotated[str, Strict(), AfterValidator(values.dns_name)]


class Spec(BaseModel):
    """Unknown keys are errors (with a did-you-mean), never silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Bond(Spec):
    name: str
    interfaces: list[str] = Field(min_length=1)
    mode: Literal["active-backup", "balance-slb", "balance-tcp"] = "active-backup"
    lacp: Literal["off", "active", "passive"] = "off"
    lacp_time: Literal["fast", "slow"] = "slow"
    lacp_fallback: Annotated[bool, Strict()] = False
    # The ToR side bundles the members with LACP when the node does; false builds the classic
    # mismatch (LACP on the node, none on the switch) for training: lacp_fallback decides the outcome.
    switch_lacp: Annotated[bool, Strict()] = True
    rebalance_interval: Annotated[int, Strict(), Field(ge=1000, le=10_000_000)] | None = None


class Bridge(Spec):
    bond: Bond | None = None
    mtu: Annotated[int, Strict(), Field(ge=1280, le=9216)] = 1500


class Cvm(Spec):
    ip: ipaddress.IPv4Interface
    vlan: Vlan = 0
    bridge: str = "br0"
    memory: MiB = 24 * 1024
    vcpus: Count = 8
    passthrough: list[str] = ["0000:01:00.0"]


class Node(Spec):
    name: str
    host_ip: ipaddress.IPv4Interface
    # What placement counts: the host's memory (the CVM's is taken from it), and whether it is in
    # maintenance mode (AHV's EnteredMaintenanceMode: no VM runs or is placed there).
    memory: MiB = 256 * 1024
    maintenance: Annotated[bool, Strict()] = False
    host_vlan: Vlan = 0
    gateway: ipaddress.IPv4Address | None = None
    cvm: Cvm
    uplinks: dict[str, Literal["1g", "10g", "25g", "40g", "100g"]] = Field(min_length=1)
    bridges: dict[str, Bridge] = Field(min_length=1)


class Switch(Spec):
    vlans: list[Vlan] = [0]
    native_vlan: Vlan = 0
    gateways: dict[Vlan, ipaddress.IPv4Interface] = {}
    # Two top-of-rack switches joined by an inter-switch link: each bond's members alternate between
    # them (the first on switch a, the second on b), so every dual-homed node survives a switch.
    pair: Annotated[bool, Strict()] = False


class IpConfig(Spec):
    """A managed network (AHV's IPAM): labkit hands out the addresses and serves DHCP for them."""

    network: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address
    pool: list[Annotated[str, Strict(), Field(max_length=64)]] = Field([], max_length=64)  # "START END", as AHV's v2 API writes them
    dhcp_server: ipaddress.IPv4Address | None = None  # AHV's default: the network's last usable address
    dns: list[ipaddress.IPv4Address] = Field([], max_length=8)
    domain_name: DnsName | None = None
    domain_search: list[DnsName] = Field([], max_length=8)
    tftp_server: Annotated[str, Strict(), AfterValidator(values.host_or_address)] | None = None
    boot_file: Annotated[str, Strict(), AfterValidator(values.boot_file)] | None = None


class Network(Spec):
    name: str
    vlan: Vlan
    bridge: str = "br0"
    ip_config: IpConfig | None = None


class Nic(Spec):
    """An access NIC (`network`), a trunk (`trunk`: tagged VLANs), or both: AHV's kTrunked NIC,
    whose network's VLAN is untagged (native) and the `trunk` VLANs tagged."""

    network: str | None = None
    trunk: list[Vlan] | None = None
    bridge: str | None = None
    ip: ipaddress.IPv4Interface | None = None  # on `network` (managed networks: the IPAM address)
    ips: dict[Vlan, ipaddress.IPv4Interface] = {}  # trunk NICs: an address per VLAN sub-interface (eth0.32)
    mac: Annotated[str, AfterValidator(_mac)] | None = None  # default: derived from the VM's name


class Image(Spec):
    """An image of AHV's image service: a disk image or an ISO file of the workstation's, copied
    into the lab's storage container (the source is only read). `size`, `format` and `bootable`
    are what qemu-img and the first sector say of the source (labkit fills them in)."""

    name: Annotated[str, Strict(), AfterValidator(values.entity_name)]
    source: Annotated[str, Strict(), AfterValidator(values.file_path)]  # relative to the topology file
    type: Literal["disk", "iso"] = "disk"
    uuid: Uuid | None = None
    vmdisk_uuid: Uuid | None = None  # its disk in the container, which clones are made over
    size: Annotated[int, Strict(), Field(ge=1, le=values.DISK_MAX)] | None = None  # bytes (an ISO may be tiny)
    format: Literal["qcow2", "raw", "vmdk", "vdi", "vhdx", "vpc"] | None = None
    bootable: Annotated[bool, Strict()] | None = None  # its first sector ends in the boot signature
    annotation: Annotated[str, Strict(), AfterValidator(values.annotation)] = ""


Bus = Literal["scsi", "pci", "ide", "sata"]
BUS_SLOTS = {"scsi": 256, "pci": 16, "ide": 4, "sata": 6}  # indexes a bus offers (ide: two channels of two)


class Disk(Spec):
    """A VM's disk (AHV's vmdisk at an address such as scsi.0): blank (`size`), cloned from an
    image (`image`, copy-on-write; `size` grows it), or a CD-ROM, empty or holding an ISO image."""

    bus: Bus = "scsi"
    index: Annotated[int, Strict(), Field(ge=0, le=255)] | None = None  # default: the bus's next free one
    cdrom: Annotated[bool, Strict()] = False
    size: DiskBytes | None = None
    image: Annotated[str, Strict(), AfterValidator(values.entity_name)] | None = None
    clone_of: Uuid | None = None  # a full copy of this vmdisk (AHV's clone_from_vmdisk, vm.clone), made once
    uuid: Uuid | None = None  # the vmdisk's, kept for its life

    @property
    def address(self) -> str:
        return f"{self.bus}.{self.index}"


class Vm(Spec):
    name: str  # AHV's: any printable text up to 80 characters (values.vm_name)
    node: str
    memory: MiB = 128
    vcpus: Count = 1  # AHV's num_vcpus: the guest's sockets
    cores_per_vcpu: Count = 1  # AHV's num_cores_per_vcpu: cores per socket
    uuid: Annotated[str, Strict(), AfterValidator(values.uuid_text)] | None = None  # given once, kept (a rename keeps it)
    nics: list[Nic] = []
    power: Literal["on", "off"] = "on"
    # a qcow2 or raw disk to boot instead of the built-in guest (relative to the file)
    image: Annotated[str, Strict(), AfterValidator(values.file_path)] | None = None
    disks: list[Disk] = Field([], max_length=64)
    boot: Annotated[str, Strict(), Field(max_length=32)] | None = None  # AHV's boot device: a disk's address (scsi.0) or a NIC's MAC
    uefi: Annotated[bool, Strict()] = False
    affinity: list[str] = Field([], max_length=64)  # AHV's VM-host affinity: the nodes it may run on
    # the node maintenance mode moved it off: host.exit_maintenance_mode brings it back there (AHV
    # restores the VMs it evacuated); a vm.migrate chosen by hand forgets it
    home: str | None = None


class LinkImpairment(Spec):
    """A link made bad on purpose (a customer's WAN, a bad cable), on what `side` sends: the
    node's (its uplink's egress), the switch's, or both; values as tc writes them (impair.py)."""

    side: Literal["node", "tor", "both"] = "node"
    delay: Annotated[str, Strict(), Field(max_length=16)] | None = None
    jitter: Annotated[str, Strict(), Field(max_length=16)] | None = None
    loss: Annotated[str, Strict(), Field(max_length=16)] | None = None
    rate: Annotated[str, Strict(), Field(max_length=16)] | None = None
    duplicate: Annotated[str, Strict(), Field(max_length=16)] | None = None
    corrupt: Annotated[str, Strict(), Field(max_length=16)] | None = None


class Topology(Spec):
    name: str
    profile: Literal["lab", "fidelity"] = "lab"
    switch: Switch = Switch()
    nodes: list[Node] = Field(min_length=1)
    networks: list[Network] = []
    images: list[Image] = Field([], max_length=256)
    vms: list[Vm] = []
    # NODE/UPLINK (or NODE/BOND: each member) -> how the link is bad: lab.up applies it (lab.impair's tc)
    impair: dict[str, LinkImpairment] = Field({}, max_length=256)


# --------------------------------------------------------------------------- loading


def load(path: str | Path | None) -> Topology:
    """Read, parse and validate a topology file; None means the embedded default (the seed's node)."""
    if path is None:
        return load_bytes(resources.files("labkit").joinpath(DEFAULT_TOPOLOGY).read_bytes(), None)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TopologyError([Problem(str(path), 0, "", f"cannot be read ({exc.strerror}); give an existing topology file")]) from None
    return load_bytes(data, path)


def load_bytes(data: bytes, path: str | Path | None) -> Topology:
    """A topology file's bytes, as read once (lab.up decides from exactly these), parsed and validated."""
    if path is None:
        return parse(data.decode(), f"<default topology {DEFAULT_TOPOLOGY}>")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise TopologyError([Problem(str(path), line, "", "is not UTF-8 text; a topology file is a YAML text file")]) from None
    topo = parse(text, str(path))
    base = Path(path).resolve().parent  # images are relative to the topology file
    vms = [vm.model_copy(update={"image": str(base / vm.image)}) if vm.image else vm for vm in topo.vms]
    images = [im.model_copy(update={"source": str(base / im.source)}) for im in topo.images]
    return topo.model_copy(update={"vms": vms, "images": images})


def parse(text: str, file: str) -> Topology:
    located = yamlpos.load(text, file)
    if not isinstance(located.data, dict):
        raise TopologyError([Problem(file, 1, "", "must be a mapping with `name` and `nodes` at the top")])
    try:
        topology = Topology.model_validate(located.data)
    except ValidationError as exc:
        raise TopologyError(_from_pydantic(exc, located)) from None
    problems = [Problem(file, located.line_of(path), yamlpos.dotted(path), msg) for path, msg in crosscheck(topology)]
    if problems:
        raise TopologyError(problems)
    return topology


def _from_pydantic(exc: ValidationError, located: yamlpos.Located) -> list[Problem]:
    problems = []
    for error in exc.errors():
        path = tuple(part for part in error["loc"] if part != "[key]")
        line = located.line_of(path)
        key = yamlpos.dotted(path)
        if error["type"] == "extra_forbidden":
            message = _unknown_key(path)
        elif error["type"] == "missing":
            message = "is missing; add it"
        else:
            text = error["msg"]
            if text.startswith("Value error, "):  # our own validators already quote the input
                message = text.removeprefix("Value error, ")
            else:
                message = f"{text[0].lower()}{text[1:]} (got {values.shown(error['input'])})"
        problems.append(Problem(located.file, line, key, message))
    return sorted(set(problems), key=lambda p: (p.line, p.key))


def _unknown_key(path: tuple) -> str:
    valid = sorted(_fields_at(Topology, path[:-1]))
    close = difflib.get_close_matches(str(path[-1]), valid, n=1, cutoff=0.5)
    hint = f"did you mean `{close[0]}`? " if close else ""
    return f"is not a known key; {hint}valid keys here: {', '.join(valid)}"


def _fields_at(model: Any, path: tuple) -> set[str]:
    """Field names of the model found at `path` below `model` (walks lists, dicts, Optional)."""
    annotation = model
    for part in path:
        annotation = _unwrap(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            annotation = annotation.model_fields[part].annotation
        elif typing.get_origin(annotation) in (list, dict):
            annotation = typing.get_args(annotation)[-1]
    annotation = _unwrap(annotation)
    return set(annotation.model_fields) if isinstance(annotation, type) and issubclass(annotation, BaseModel) else set()


def _unwrap(annotation: Any) -> Any:
    """`Bond | None` -> Bond; `Annotated[X, ...]` -> X."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            annotation = next(arg for arg in typing.get_args(annotation) if arg is not type(None))
        else:
            return annotation


# --------------------------------------------------------------------------- cross-checks


def crosscheck(topo: Topology, pools: bool = True) -> list[tuple[tuple, str]]:
    """Checks that need the whole file; returns (path, message) pairs. `pools`: also that every NIC
    of a managed network can get an address (the control plane asks IPAM itself, for its words)."""
    out: list[tuple[tuple, str]] = []

    def bad(path: tuple, message: str) -> None:
        out.append((path, message))

    if not LAB_NAME_RE.fullmatch(topo.name):
        bad(("name",), f"{shown(topo.name)} is not a valid lab name; use 1-12 of a-z, 0-9 and '-', starting with a letter")
    _unique(bad, [(("nodes", i, "name"), n.name) for i, n in enumerate(topo.nodes)], "node")
    _unique(bad, [(("vms", i, "name"), v.name) for i, v in enumerate(topo.vms)], "VM")
    first = {v.name: i for i, v in reversed(list(enumerate(topo.vms)))}  # a name used twice is said above
    _unique(bad, [(("vms", i, "name"), names.domain_name(v.name)) for i, v in enumerate(topo.vms) if first[v.name] == i],
            "VM domain name")
    _unique(bad, [(("networks", i, "name"), n.name) for i, n in enumerate(topo.networks)], "network")

    vlans = set(topo.switch.vlans)
    _unique(bad, [(("switch", "vlans", i), v) for i, v in enumerate(topo.switch.vlans)], "VLAN")
    if topo.switch.native_vlan not in vlans:
        bad(("switch", "native_vlan"), f"VLAN {topo.switch.native_vlan} is not in switch.vlans; add it there or pick one of {sorted(vlans)}")
    for vlan, gw in topo.switch.gateways.items():
        path = ("switch", "gateways", vlan)
        if vlan not in vlans:
            bad(path, f"VLAN {vlan} is not in switch.vlans {sorted(vlans)}; add it there")
        _host_address(bad, path, gw)

    addresses: list[tuple[tuple, ipaddress.IPv4Address]] = []
    for i, node in enumerate(topo.nodes):
        _check_node(bad, ("nodes", i), node, topo, addresses)
        for bname, bridge in node.bridges.items():
            bond = bridge.bond
            if topo.switch.pair and bond is not None and bond.lacp != "off" and bond.switch_lacp:
                bad(("nodes", i, "bridges", bname, "bond", "lacp"), "an LACP bond across two switches needs MLAG, which "
                    "the lab does not simulate; use active-backup or balance-slb, or switch_lacp: false")

    networks = {n.name: n for n in topo.networks}
    for i, net in enumerate(topo.networks):
        _check_network(bad, ("networks", i), net, topo)

    _unique(bad, [(("images", i, "name"), im.name) for i, im in enumerate(topo.images)], "image")
    images = {im.name: im for im in topo.images}
    nodes = {n.name: n for n in topo.nodes}
    for i, vm in enumerate(topo.vms):
        path = ("vms", i)
        try:
            values.vm_name(vm.name)
        except ValueError as exc:
            bad(path + ("name",), str(exc))
        node = nodes.get(vm.node)
        if node is None:
            bad(path + ("node",), f"node {shown(vm.node)} does not exist; {_choices(vm.node, nodes)}")
        for j, nic in enumerate(vm.nics):
            _check_nic(bad, path + ("nics", j), nic, node, networks, vlans, addresses)
        if vm.image is not None and not re.search(r"\.(qcow2|img|raw)\Z", vm.image):
            bad(path + ("image",), f"{shown(vm.image)} is not a disk image; give a .qcow2, .img or .raw file")
        _check_placement(bad, path, vm, nodes)
        _check_disks(bad, path, vm, images)

    _unique(bad, [(p, str(a)) for p, a in addresses], "IP address")
    _unique(bad, [(("vms", i, "nics", j, "mac"), nic.mac) for i, vm in enumerate(topo.vms)
                  for j, nic in enumerate(vm.nics) if nic.mac], "MAC address")
    if pools:
        _check_pools(bad, topo)
    _check_impairments(bad, topo)
    return out


def _check_impairments(bad, topo: Topology) -> None:
    from .errors import LabkitError
    from .impair import parse

    nodes = {n.name: n for n in topo.nodes}
    for place, spec in topo.impair.items():
        node_name, _, iface = place.partition("/")
        node = nodes.get(node_name)
        if node is None:
            bad(("impair", place), f"node {shown(node_name)} does not exist; write NODE/UPLINK with one of the nodes: "
                                   f"{', '.join(nodes)}")
            continue
        bonds = {b.bond.name for b in node.bridges.values() if b.bond is not None}
        if iface not in node.uplinks and iface not in bonds:
            bad(("impair", place), f"node {node.name} has no uplink or bond {shown(iface)}; "
                                   f"{_choices(iface, [*node.uplinks, *bonds])}")
        try:
            parse(spec.delay, spec.jitter, spec.loss, spec.rate, spec.duplicate, spec.corrupt)
        except LabkitError as exc:
            bad(("impair", place), str(exc).replace("--", "").replace(" (or clear to make it good again)", "; or remove it"))


def _check_placement(bad, path: tuple, vm: Vm, nodes: dict) -> None:
    for k, name in enumerate(vm.affinity):
        if name not in nodes:
            bad(path + ("affinity", k), f"node {shown(name)} does not exist; {_choices(name, nodes)}")
    if vm.affinity and vm.node in nodes and vm.node not in vm.affinity:
        bad(path + ("node",), f"node {vm.node} is not in the VM's affinity {vm.affinity}; place it on one of them")
    if vm.home is not None and vm.home not in nodes:
        bad(path + ("home",), f"node {shown(vm.home)} does not exist; {_choices(vm.home, nodes)}")
    elif vm.home is not None and not nodes[vm.home].maintenance:
        bad(path + ("home",), f"node {vm.home} is not in maintenance mode; home names the node a VM left for maintenance")
    node = nodes.get(vm.node)
    if node is not None and node.maintenance and vm.power == "on":
        bad(path + ("node",), f"node {vm.node} is in maintenance mode; run the VM on another node or power it off")


def _check_disks(bad, path: tuple, vm: Vm, images: dict) -> None:
    """Each disk one kind (blank, a clone, a CD-ROM) at its own address; the boot device one of the VM's."""
    addresses = []
    for k, disk in enumerate(vm.disks):
        dpath = path + ("disks", k)
        image = images.get(disk.image) if disk.image else None
        if disk.image is not None and image is None:
            bad(dpath + ("image",), f"image {shown(disk.image)} does not exist; {_choices(disk.image, images)}")
        if disk.cdrom:
            if disk.bus not in ("ide", "sata"):
                bad(dpath + ("bus",), f"a CD-ROM sits on bus ide or sata, not {disk.bus}; set bus: ide")
            if disk.size is not None:
                bad(dpath + ("size",), "does not apply to a CD-ROM (its size is its ISO's); remove it")
            if image is not None and image.type != "iso":
                bad(dpath + ("image",), f"image {image.name} is a disk image; a CD-ROM holds an ISO image")
        else:
            if disk.image is None and disk.size is None:
                bad(dpath, "needs `size` (a blank disk) or `image` (a clone of it); or set cdrom: true")
            if disk.image is not None and disk.clone_of is not None:
                bad(dpath + ("clone_of",), "a disk is a clone of an image or a copy of a vmdisk, not both; remove one")
            if image is not None and image.type == "iso":
                bad(dpath + ("image",), f"image {image.name} is an ISO; clone it to a CD-ROM (cdrom: true)")
            if image is not None and image.size and disk.size is not None and disk.size < image.size:
                bad(dpath + ("size",), f"{values.size_text(disk.size)} is smaller than image {image.name} "
                                       f"({values.size_text(image.size)}); a clone can only grow")
        if disk.index is not None:
            if disk.index >= BUS_SLOTS[disk.bus]:
                bad(dpath + ("index",), f"bus {disk.bus} has indexes 0-{BUS_SLOTS[disk.bus] - 1}; use one of them")
            addresses.append((dpath + ("index",), disk.address))
    _unique(bad, addresses, "disk address")
    placed = indexed(vm.disks)
    for k, disk in enumerate(placed):
        if disk.index >= BUS_SLOTS[disk.bus] and vm.disks[k].index is None:
            bad(path + ("disks", k), f"bus {disk.bus} has no free index left; put the disk on another bus")
    if vm.boot is not None:
        known = {d.address for d in placed} | {n.mac for n in vm.nics if n.mac}
        if vm.boot not in known:
            bad(path + ("boot",), f"{shown(vm.boot)} is not one of the VM's disks or NICs; {_choices(vm.boot, known)}")


def indexed(disks: list[Disk]) -> list[Disk]:
    """The disks with an index each: a disk without one takes its bus's lowest index no disk holds
    (AHV's way), in the order they are listed."""
    taken = {(d.bus, d.index) for d in disks if d.index is not None}
    out = []
    for disk in disks:
        if disk.index is None:
            index = next(i for i in range(BUS_SLOTS[disk.bus] + 1) if (disk.bus, i) not in taken)
            taken.add((disk.bus, index))
            disk = disk.model_copy(update={"index": index})
        out.append(disk)
    return out


def _check_pools(bad, topo: Topology) -> None:
    """Every NIC of a managed network without an `ip` takes one from the network's pool."""
    for net in topo.networks:
        ipc = net.ip_config
        if ipc is None or ipc.network.prefixlen < ipam.MIN_PREFIX:
            continue
        requested = {nic.ip.ip for vm in topo.vms for nic in vm.nics if nic.network == net.name and nic.ip}
        try:
            if any(start > end or start not in ipc.network or end not in ipc.network for start, end in ipam.ranges(ipc)):
                continue  # reported by _check_network
            free, _ = ipam.free_count(ipc, ipam.reserved(ipc) | requested)
        except ValueError:
            continue  # a malformed range, reported by _check_network
        waiting = [("vms", i, "nics", j) for i, vm in enumerate(topo.vms) for j, nic in enumerate(vm.nics)
                   if nic.network == net.name and nic.ip is None]
        if len(waiting) > free:
            how = "has no pool" if not ipc.pool else f"has {free} free address(es) for {len(waiting)} NICs"
            bad(waiting[free], f"cannot get an address: managed network {net.name} {how}; "
                               f"add a pool range or give this NIC an `ip`")


def _check_node(bad, path: tuple, node: Node, topo: Topology, addresses: list) -> None:
    _hostname(bad, path + ("name",), node.name, "node")
    if re.fullmatch(r"gw\d+|tor", node.name):  # labkit.<lab>.gw<N> is VLAN N's gateway namespace
        bad(path + ("name",), f"{shown(node.name)} is reserved for the lab's switch and gateways; name the node otherwise")
    if len(f"NTNX-{node.name}-CVM") > 64:
        bad(path + ("name",), "is too long for a CVM name; use at most 54 characters")
    for uplink in node.uplinks:
        _ifname(bad, path + ("uplinks", uplink), uplink)
    for bname in node.bridges:
        _ifname(bad, path + ("bridges", bname), bname)
    port_names = [(path + ("uplinks", u), u) for u in node.uplinks] + [(path + ("bridges", b), b) for b in node.bridges]
    used_by: dict[str, str] = {}
    for bname, bridge in node.bridges.items():
        if bridge.bond is None:
            continue
        bpath = path + ("bridges", bname, "bond")
        bond = bridge.bond
        _ifname(bad, bpath + ("name",), bond.name)
        port_names.append((bpath + ("name",), bond.name))
        for k, member in enumerate(bond.interfaces):
            mpath = bpath + ("interfaces", k)
            if member not in node.uplinks:
                bad(mpath, f"{shown(member)} is not an uplink of node {node.name}; {_choices(member, node.uplinks)}")
            elif member in used_by:
                bad(mpath, f"{shown(member)} is already a member of bond {used_by[member]}; an uplink belongs to one bond only")
            else:
                used_by[member] = bond.name
        if bond.mode == "balance-tcp" and bond.lacp == "off":
            bad(bpath + ("lacp",), "must be active or passive with mode balance-tcp (LACP); set lacp: active")
        if bond.mode != "balance-tcp" and bond.lacp != "off":
            bad(bpath + ("lacp",), f"LACP needs mode balance-tcp, not {bond.mode}; set mode: balance-tcp or lacp: off")
        if not bond.switch_lacp and bond.lacp == "off":
            bad(bpath + ("switch_lacp",), "only applies with LACP on the node; set lacp: active or remove switch_lacp")
        if bond.lacp_fallback and bond.lacp == "off":
            bad(bpath + ("lacp_fallback",), "only applies with LACP; set lacp: active or remove lacp_fallback")
        if bond.rebalance_interval is not None and bond.mode != "balance-slb":
            bad(bpath + ("rebalance_interval",), f"only applies to mode balance-slb, not {bond.mode}; remove it")
    _unique(bad, port_names, "port name on this node")

    vlans = set(topo.switch.vlans)
    subnet = node.host_ip.network
    _host_address(bad, path + ("host_ip",), node.host_ip)
    addresses.append((path + ("host_ip",), node.host_ip.ip))
    if node.host_vlan not in vlans:
        bad(path + ("host_vlan",), f"VLAN {node.host_vlan} is not in switch.vlans {sorted(vlans)}; add it there")
    gateway = node.gateway or (topo.switch.gateways[node.host_vlan].ip if node.host_vlan in topo.switch.gateways else None)
    if gateway is None:
        bad(path + ("host_ip",), f"has no gateway; set nodes[].gateway or switch.gateways.{node.host_vlan}")
    elif gateway not in subnet:
        bad(path + ("gateway",) if node.gateway else ("switch", "gateways", node.host_vlan),
            f"gateway {gateway} is outside the host subnet {subnet}; use an address in {subnet}")
    elif gateway == node.host_ip.ip:
        bad(path + ("host_ip",), f"is the gateway address {gateway}; give the host its own address")

    cpath = path + ("cvm",)
    cvm = node.cvm
    _host_address(bad, cpath + ("ip",), cvm.ip)
    addresses.append((cpath + ("ip",), cvm.ip.ip))
    if cvm.ip.network != subnet and cvm.vlan == node.host_vlan:
        bad(cpath + ("ip",), f"{cvm.ip} is not in the host subnet {subnet}; the CVM and host share VLAN {cvm.vlan}")
    if cvm.vlan not in vlans:
        bad(cpath + ("vlan",), f"VLAN {cvm.vlan} is not in switch.vlans {sorted(vlans)}; add it there")
    if cvm.bridge not in node.bridges:
        bad(cpath + ("bridge",), f"bridge {shown(cvm.bridge)} is not a bridge of node {node.name}; {_choices(cvm.bridge, node.bridges)}")
    for k, address in enumerate(cvm.passthrough):
        if not PCI_RE.fullmatch(address):
            bad(cpath + ("passthrough", k), f"{shown(address)} is not a PCI address; write it like 0000:01:00.0")


def _check_network(bad, path: tuple, net: Network, topo: Topology) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", net.name):
        bad(path + ("name",), f"{shown(net.name)} is not a valid network name; use letters, digits, '_', '.' and '-'")
    if net.vlan not in topo.switch.vlans:
        bad(path + ("vlan",), f"VLAN {net.vlan} is not carried by the switch; add it to switch.vlans {sorted(topo.switch.vlans)}")
    for node in topo.nodes:
        if net.bridge not in node.bridges:
            bad(path + ("bridge",), f"bridge {shown(net.bridge)} does not exist on node {node.name}; {_choices(net.bridge, node.bridges)}")
    ipc = net.ip_config
    if ipc is None:
        return
    ipath = path + ("ip_config",)
    if ipc.network.prefixlen < ipam.MIN_PREFIX:
        bad(ipath + ("network",), f"{ipc.network} has {ipc.network.num_addresses:,} addresses; a lab's managed network "
                                  f"holds at most {ipam.MAX_ADDRESSES:,}: use a /{ipam.MIN_PREFIX} or longer prefix")
        return
    if ipc.gateway not in ipc.network:
        bad(ipath + ("gateway",), f"{ipc.gateway} is outside {ipc.network}; use an address in it")
    seen: list[tuple[ipaddress.IPv4Address, ipaddress.IPv4Address, str]] = []
    for k, text in enumerate(ipc.pool):
        ppath = ipath + ("pool", k)
        try:
            start, end = ipam.parse_range(text)
        except ValueError:
            start = end = None
        if start is None or text != f"{start} {end}":
            bad(ppath, f"{shown(text)} is not a range; write it as \"START END\", e.g. \"10.40.0.50 10.40.0.99\"")
            continue
        overlap = next((other for low, high, other in seen if start <= high and low <= end), None)
        if start not in ipc.network or end not in ipc.network:
            bad(ppath, f"range {shown(text)} is not inside {ipc.network}; keep both ends in the network")
        elif start > end:
            bad(ppath, f"range {shown(text)} starts after it ends; put the lower address first")
        elif start <= ipc.gateway <= end:
            bad(ppath, f"range {shown(text)} contains the gateway {ipc.gateway}; leave the gateway out of the pool")
        elif start <= ipam.dhcp_server(ipc) <= end:
            bad(ppath, f"range {shown(text)} contains the DHCP server {ipam.dhcp_server(ipc)}; leave it out of the pool")
        elif overlap is not None:
            bad(ppath, f"range {shown(text)} overlaps range {overlap!r}; give each address to one range")
        else:
            seen.append((start, end, text))
    if ipc.dhcp_server is not None and (ipc.dhcp_server not in ipc.network or ipc.dhcp_server == ipc.gateway):
        bad(ipath + ("dhcp_server",), f"{ipc.dhcp_server} must be an address of {ipc.network} other than the gateway")


def _check_nic(bad, path: tuple, nic: Nic, node: Node | None, networks: dict, vlans: set, addresses: list) -> None:
    if nic.network is None and nic.trunk is None:
        bad(path, "needs `network` (access), `trunk` (tagged VLANs) or both (the network's VLAN untagged)")
        return
    if nic.network is not None:
        if nic.network not in networks:
            bad(path + ("network",), f"network {shown(nic.network)} does not exist; {_choices(nic.network, networks)}")
        if nic.bridge is not None:
            bad(path + ("bridge",), "comes from the network; remove it")
        if nic.ips and nic.trunk is None:
            bad(path + ("ips",), "is for trunk NICs; an access NIC takes `ip`")
        ipc = networks[nic.network].ip_config if nic.network in networks else None
        if nic.ip is not None and ipc is not None:  # managed: an address inside the network, not its own
            if nic.ip.ip not in ipc.network:
                bad(path + ("ip",), f"{nic.ip.ip} is outside the managed network {ipc.network}; request an address in it")
            elif nic.ip.ip in (ipc.gateway, ipam.dhcp_server(ipc)) or nic.ip.ip in (ipc.network.network_address,
                                                                                   ipc.network.broadcast_address):
                bad(path + ("ip",), f"{nic.ip.ip} is the gateway, the DHCP server or not a host address of "
                                    f"{ipc.network}; request another address")
            addresses.append((path + ("ip",), nic.ip.ip))
        elif nic.ip is not None:
            _host_address(bad, path + ("ip",), nic.ip)
            addresses.append((path + ("ip",), nic.ip.ip))
    if nic.trunk is not None:
        if not nic.trunk and nic.network is None:  # OVS would make a port without VLANs carry all of them
            bad(path + ("trunk",), "lists no VLAN; list the VLANs to carry tagged, or give `network` for an access NIC")
        for k, vlan in enumerate(nic.trunk):
            if vlan not in vlans:
                bad(path + ("trunk", k), f"VLAN {vlan} is not in switch.vlans {sorted(vlans)}; add it there")
        if nic.ip is not None and nic.network is None:
            bad(path + ("ip",), "does not apply to a trunk NIC; give per-VLAN addresses in `ips` instead")
        for vlan, address in nic.ips.items():
            if vlan not in (nic.trunk or []):
                bad(path + ("ips", vlan), f"VLAN {vlan} is not in this NIC's trunk {nic.trunk}; add it there")
            _host_address(bad, path + ("ips", vlan), address)
            addresses.append((path + ("ips", vlan), address.ip))
        bridge = networks[nic.network].bridge if nic.network in networks else nic.bridge or "br0"
        if node is not None and bridge not in node.bridges:
            bad(path + ("bridge",), f"bridge {shown(bridge)} does not exist on node {node.name}; {_choices(bridge, node.bridges)}")


def _ifname(bad, path: tuple, name: str) -> None:
    if len(name.encode()) > IFNAME_MAX or not IFNAME_RE.fullmatch(name):
        bad(path, f"{shown(name)} is not a valid interface name; use at most 15 of A-Z, a-z, 0-9, '_', '.', '-'")


def _hostname(bad, path: tuple, name: str, what: str) -> None:
    if not HOST_NAME_RE.fullmatch(name):
        bad(path, f"{shown(name)} is not a valid {what} name; use 1-32 of letters, digits and '-', not starting with '-'")


def _host_address(bad, path: tuple, iface: ipaddress.IPv4Interface) -> None:
    net = iface.network
    if net.prefixlen < 31 and iface.ip in (net.network_address, net.broadcast_address):
        bad(path, f"{iface} is the network or broadcast address of {net}; use a host address inside it")


def _unique(bad, items: list[tuple[tuple, Any]], what: str) -> None:
    seen: dict[Any, tuple] = {}
    for path, value in items:
        if value in seen:
            bad(path, f"{what} {shown(value)} is used twice (first at {yamlpos.dotted(seen[value])}); each must be unique")
        else:
            seen[value] = path


def _choices(value: str, valid) -> str:
    valid = sorted(valid)
    if not valid:
        return "none is defined"
    close = difflib.get_close_matches(value, valid, n=1, cutoff=0.5)
    hint = f"did you mean {shown(close[0])}? " if close else ""
    return f"{hint}defined: {', '.join(values.echo(str(v)) for v in valid)}"
