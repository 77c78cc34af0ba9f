"""OVSDB adapter (ovsdbapp over the ovs IDL): observe bridges and ports, converge them in one transaction.

A node's bridge, its bond and all its ports are written by one
`ConvergeBridge` command inside one transaction: no round trip per port.
Every row labkit writes carries external_ids labkit-lab=<lab>; ports that
libvirt adds for domains (vnetN, taps) are left to libvirt.
"""

from __future__ import annotations

import re
import subprocess

from ovsdbapp.backend.ovs_idl import command, connection, idlutils, transaction
from ovsdbapp.schema.open_vswitch import impl_idl

from ..errors import HostError
from .. import names
from . import DEADLINE, Connection, bounded, stats
from ..hoststate import SeenBridge, SeenVmPort
from ..model import OvsBridge, OvsInterface, OvsPort
from ..paths import OVSDB_SOCK

LAB_KEY = "labkit-lab"
FLOWS_KEY = "labkit-flows"  # digest of the OpenFlow rules labkit set on the bridge


def _describe(exc: BaseException) -> str:
    """An ovsdbapp exception as text (some of theirs cannot format themselves), with its cause."""
    try:
        text = str(exc) or type(exc).__name__
    except Exception:
        text = type(exc).__name__
    if "object has no attribute" in text:  # ovsdbapp's own message template failed
        text = type(exc).__name__
    cause = exc.__cause__ or exc.__context__
    return f"{text}: {_describe(cause)}" if cause is not None else text


def _opt(value):
    """OVSDB optional columns are lists of zero or one element."""
    return value[0] if value else None


class Ovs(Connection):
    def __init__(self, remote: str = f"unix:{OVSDB_SOCK}", timeout: int = 20):
        self.remote = remote
        # Connecting reads the schema and the whole database with blocking calls: bounded here.
        # Transactions are bounded by ovsdbapp's own `timeout`.
        self._conn, self.api = bounded("OVSDB", f"connecting to {remote}", self._connect, remote, timeout)

    @staticmethod
    def _connect(remote: str, timeout: int):
        try:
            idl = connection.OvsdbIdl.from_server(remote, "Open_vSwitch")
            conn = connection.Connection(idl=idl, timeout=min(timeout, DEADLINE))
            # ovsdbapp keeps one connection per API class, the first ever given, for the whole process:
            # a class of its own per connection, so that this one is used and closing it closes it
            return conn, type("LabkitOvsdb", (impl_idl.OvsdbIdl,), {"_ovsdb_connection": None})(conn)
        except Exception as exc:  # ovsdbapp raises bare Exception/TimeoutException on connect
            raise HostError(f"cannot reach ovsdb-server at {remote} ({_describe(exc)}); run `invoke host.bootstrap`") from None

    def close(self) -> None:
        """Stop the connection's thread (which closes the IDL), then its wake-up pipe (ovsdbapp's
        stop() leaves that open: a process that connects often would run out of descriptors)."""
        if self._conn.stop(timeout=DEADLINE) and self._conn.thread is None:  # its run() closed the IDL
            self._conn.txns.close()

    # observe --------------------------------------------------------------

    def observe(self) -> tuple[SeenBridge, ...]:
        """Every bridge: its lab's ports read back into model types, the names of all others. Read
        under the connection's lock: its thread applies OVSDB's updates to the rows meanwhile (a
        lab.down destroying domains removes their ports while we read)."""
        from dataclasses import replace

        with self.api.ovsdb_connection.lock:
            bridges = [self._read_bridge(br) for br in list(self.api.tables["Bridge"].rows.values())]
        # the rules live in ovs-vswitchd: counted outside the lock
        bridges = [replace(b, flow_count=flow_count(b.name, b.lab)) if b.flows_digest and b.lab else b for b in bridges]
        return tuple(sorted(bridges, key=lambda b: b.name))

    @staticmethod
    def _read_bridge(br) -> SeenBridge:
        lab = br.external_ids.get(LAB_KEY)
        ours, others, vm_ports, bonds = [], [], [], []
        for port in br.ports:
            if lab is not None and port.external_ids.get(LAB_KEY) == lab:
                ours.append(_read_port(port))
                if len(port.interfaces) > 1:
                    bonds.append((port.name, _bond_problems(port)))
            else:
                others.append(port.name)
                iface = next((i for i in port.interfaces if i.external_ids.get("iface-id")), None)
                if iface is not None:
                    problem = _opt(iface.error) or ("" if _opt(iface.link_state) in (None, "up") else "link down")
                    vm_ports.append(SeenVmPort(port.name, iface.external_ids["iface-id"], _opt(port.tag),
                                               tuple(sorted(port.trunks)), _opt(port.vlan_mode), problem or ""))
        return SeenBridge(br.name, lab, br.datapath_type or "system", tuple(sorted(ours, key=lambda p: p.name)),
                          tuple(sorted(others)), br.external_ids.get(FLOWS_KEY, ""), 0,
                          tuple(sorted(vm_ports, key=lambda v: v.name)), tuple(sorted(bonds)))

    def bonds(self, lab: str, node: str) -> list:
        """The bonds on `node`'s bridges as manage_ovs shows them."""
        with self.api.ovsdb_connection.lock:
            return self._bonds(lab, node)

    def _bonds(self, lab: str, node: str) -> list:
        from ..manage_ovs import BondState

        out = []
        for br in sorted(self.api.tables["Bridge"].rows.values(), key=lambda b: b.name):
            ext = br.external_ids
            if ext.get(LAB_KEY) != lab or ext.get("labkit-node") != node:
                continue
            for port in sorted(br.ports, key=lambda p: p.name):
                if len(port.interfaces) < 2 and not port.bond_mode:
                    continue
                other = port.other_config
                out.append(BondState(ext.get("labkit-ahv-name", br.name), port.name, _opt(port.bond_mode) or "active-backup",
                                     tuple(sorted((i.name for i in port.interfaces), reverse=True)),
                                     _opt(port.lacp) or "off", other.get("lacp-fallback-ab") == "true",
                                     other.get("lacp-time", "slow")))
        return out

    # change ---------------------------------------------------------------

    def converge(self, bridges: list[OvsBridge], lab: str, delete_ports: list[str] = ()) -> None:
        """Create or update `bridges` with exactly their desired labkit ports, and delete the
        named ports, in a single transaction."""
        stats.count("ovsdb transaction")
        try:
            with self.api.transaction(check_error=True) as txn:
                for port in delete_ports:
                    txn.add(self.api.del_port(port, if_exists=True))
                for bridge in bridges:
                    txn.add(ConvergeBridge(self.api, bridge, lab))
        except RuntimeError as exc:  # raised by ConvergeBridge, or OVSDB refusing the transaction
            raise HostError(f"OVSDB did not take lab {lab}'s bridges ({exc}); nothing of that transaction was "
                            f"applied; check `ovs-vsctl show`, then run lab.up again") from None

    def set_vm_ports(self, ports: list[tuple[str, int | None, tuple[int, ...], str | None]]) -> None:
        """Put VLAN settings back on ports libvirt made for domain NICs (someone changed them by hand),
        in one transaction: (port, tag, trunks, vlan_mode); None and () clear a column."""
        stats.count("ovsdb transaction")
        try:
            with self.api.transaction(check_error=True) as txn:
                for name, tag, trunks, vlan_mode in ports:
                    txn.add(self.api.db_set("Port", name, ("trunks", list(trunks))))
                    for column, value in (("tag", tag), ("vlan_mode", vlan_mode)):
                        txn.add(self.api.db_set("Port", name, (column, value)) if value is not None
                                else self.api.db_clear("Port", name, column))
        except RuntimeError as exc:
            raise HostError(f"OVSDB did not take the VLANs of port(s) {', '.join(p[0] for p in ports)} ({exc}); "
                            f"check `ovs-vsctl show`, then run lab.up again") from None

    def set_flows_digest(self, bridge: str, digest: str) -> None:
        """Record which rules labkit set on the bridge (after setting them: a digest never names
        rules that are not there)."""
        stats.count("ovsdb transaction")
        try:
            with self.api.transaction(check_error=True) as txn:
                if digest:
                    txn.add(self.api.db_set("Bridge", bridge, ("external_ids", {FLOWS_KEY: digest})))
                else:
                    txn.add(self.api.db_remove("Bridge", bridge, "external_ids", FLOWS_KEY, if_exists=True))
        except RuntimeError as exc:
            raise HostError(f"OVSDB did not take the rules' digest of bridge {bridge} ({exc}); run lab.up again") from None

    def delete_bridges(self, names: list[str]) -> None:
        """One transaction, without waiting for ovs-vswitchd to catch up: nothing waits on a bridge
        that is gone (ovsdbapp's Open_vSwitch transactions wait, as ovs-vsctl does without --no-wait)."""
        stats.count("ovsdb transaction")
        try:
            with transaction.Transaction(self.api, self._conn, self._conn.timeout, check_error=True) as txn:
                for name in names:
                    txn.add(self.api.del_br(name, if_exists=True))
        except Exception as exc:  # ovsdbapp raises its own types too (timeouts, lost connections)
            raise HostError(f"OVSDB did not delete bridge(s) {', '.join(names)} ({exc}); check `ovs-vsctl show`") from None


OFCTL_SECONDS = min(10.0, DEADLINE)


def _ofctl(args: list[str], bundle: str | None = None) -> subprocess.CompletedProcess:
    """ovs-ofctl, bounded: OpenFlow rules live in ovs-vswitchd, not in OVSDB, and no library of
    labkit's speaks OpenFlow, so its client is run; a hung ovs-vswitchd is one sentence."""
    try:
        return subprocess.run(["ovs-ofctl", *args], input=bundle, capture_output=True, text=True, timeout=OFCTL_SECONDS)
    except subprocess.TimeoutExpired:
        raise HostError(f"ovs-vswitchd did not answer ovs-ofctl {args[0]} within {OFCTL_SECONDS:.0f} s; "
                        f"check that it runs (ovs-appctl version), then run the command again") from None


def flow_count(bridge: str, lab: str) -> int:
    """Rules with the lab's cookie on the bridge now."""
    run = _ofctl(["dump-aggregate", bridge, f"cookie={names.flow_cookie(lab)}/{names.FLOW_COOKIE_MASK}"])
    match = re.search(r"flow_count=(\d+)", run.stdout)
    return int(match.group(1)) if match else 0


def set_flows(bridge: str, lab: str, flows: tuple[str, ...]) -> None:
    """Replace the lab's rules on the bridge with `flows`, in one OpenFlow bundle (atomic)."""
    cookie = f"cookie={names.flow_cookie(lab)}/{names.FLOW_COOKIE_MASK}"
    bundle = "\n".join([f"delete {cookie}"] + [f"add {flow}" for flow in flows]) + "\n"
    run = _ofctl(["--bundle", "add-flows", bridge, "-"], bundle)
    if run.returncode:
        raise HostError(f"ovs-ofctl could not set the rules of bridge {bridge} ({run.stderr.strip()[-300:]}); "
                        f"check `ovs-ofctl dump-flows {bridge}`")


class ConvergeBridge(command.BaseCommand):
    """Make one bridge and its labkit ports match the model, reusing rows that exist."""

    def __init__(self, api, bridge: OvsBridge, lab: str):
        super().__init__(api)
        self.bridge, self.lab = bridge, lab

    def run_idl(self, txn):
        want = self.bridge
        tables = self.api._tables
        br = idlutils.row_by_value(self.api.idl, "Bridge", "name", want.name, None)
        marks = {LAB_KEY: self.lab, "labkit-role": want.role, "labkit-ahv-name": want.ahv_name}
        if want.node:
            marks["labkit-node"] = want.node
        if br is None:
            br = txn.insert(tables["Bridge"])
            br.name = want.name
            self.api._ovs.addvalue("bridges", br)
            local = self._insert_port(txn, want.name, [self._insert_iface(txn, OvsInterface(want.name, "internal"))])
            br.ports = [local]
        elif br.external_ids.get(LAB_KEY) != self.lab:
            raise RuntimeError(f"bridge {want.name} is not lab {self.lab}'s")
        br.datapath_type = want.datapath_type
        if FLOWS_KEY in getattr(br, "external_ids", {}):  # the rules' digest is set_flows_digest's, after the rules
            marks[FLOWS_KEY] = br.external_ids[FLOWS_KEY]
        br.external_ids = marks
        current = {p.name: p for p in br.ports}
        wanted = {p.name for p in want.ports}
        for name, row in current.items():
            if getattr(row, "external_ids", {}).get(LAB_KEY) == self.lab and name not in wanted:  # new rows have none yet
                br.delvalue("ports", row)
        for port in want.ports:
            row = current.get(port.name)
            if row is None:
                row = idlutils.row_by_value(self.api.idl, "Port", "name", port.name, None)
                if row is not None:
                    raise RuntimeError(f"port {port.name} exists on another bridge")
                row = self._insert_port(txn, port.name, [])
                br.addvalue("ports", row)
            self._set_port(txn, row, port)

    def _insert_port(self, txn, name, interfaces):
        row = txn.insert(self.api._tables["Port"])
        row.name = name
        row.interfaces = interfaces
        return row

    def _insert_iface(self, txn, iface: OvsInterface):
        row = txn.insert(self.api._tables["Interface"])
        row.name = iface.name
        self._set_iface(row, iface)
        return row

    def _set_iface(self, row, iface: OvsInterface) -> None:
        row.type = iface.type
        row.options = dict(iface.options)
        row.mtu_request = [iface.mtu_request] if iface.mtu_request else []
        row.external_ids = {LAB_KEY: self.lab}

    def _set_port(self, txn, row, port: OvsPort) -> None:
        existing = {i.name: i for i in getattr(row, "interfaces", [])}  # new rows cannot be read back
        interfaces = []
        for iface in port.interfaces:
            irow = existing.get(iface.name)
            if irow is None:
                irow = self._insert_iface(txn, iface)
            else:
                self._set_iface(irow, iface)
            interfaces.append(irow)
        row.interfaces = interfaces
        row.tag = [] if port.tag is None else [port.tag]
        row.trunks = list(port.trunks)
        row.vlan_mode = [port.vlan_mode] if port.vlan_mode else []
        row.bond_mode = [port.bond_mode] if port.bond_mode else []
        row.lacp = [port.lacp] if port.lacp else []
        row.other_config = dict(port.other_config)
        row.external_ids = {LAB_KEY: self.lab}


def _bond_problems(port) -> tuple[str, ...]:
    """What keeps each member of a bond from carrying traffic: link down, or LACP not current."""
    problems = []
    for iface in sorted(port.interfaces, key=lambda i: i.name):
        if _opt(iface.link_state) != "up":
            problems.append(f"{iface.name} link down")
        elif port.lacp and _opt(iface.lacp_current) is not True:
            problems.append(f"{iface.name} LACP not negotiated")
    return tuple(problems)


def _read_port(row) -> OvsPort:
    """A Port row as the model's OvsPort, in the model's order (interfaces by name as written)."""
    interfaces = tuple(
        OvsInterface(i.name, i.type or "", tuple(sorted(i.options.items())), _opt(i.mtu_request))
        for i in row.interfaces
    )
    return OvsPort(
        row.name, tuple(sorted(interfaces, key=lambda i: i.name)), _opt(row.tag), tuple(sorted(row.trunks)),
        _opt(row.vlan_mode), _opt(row.bond_mode), _opt(row.lacp), tuple(sorted(row.other_config.items())),
    )
