"""acli typed in a CVM: the relay's side of protocol LKA1 over a socket pair, with the lab in
memory. What the guest's client (images/guest/acli.c) prints is what `invoke acli -c` prints;
a delete asks the CVM's terminal; a client that went away mid-question, a stale answer, noise and
a line that is not text never confuse the next request. The real channel: tests/integration."""

from __future__ import annotations

import socket
import threading

from labkit import acli_relay, acli_shell, topology

from ..conftest import REPO
from .test_acli import MemorySession


def lab_session():
    return MemorySession(topology.load(str(REPO / "tests/topologies/training.yaml")))


class Guest:
    """The CVM's end of the channel, as acli.c speaks it."""

    def __init__(self, session):
        self.sock, relay_end = socket.socketpair()
        self.relay = acli_relay.Relay("training", session=lambda: session)
        self.port = acli_relay.Port(self.sock, "test")
        self.thread = threading.Thread(target=self.relay.serve, args=(acli_relay.Port(relay_end, "cvm"), "cvm"),
                                       daemon=True)
        self.thread.start()

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\n")

    def request(self, rid: str, flags: str, line: str, answer: str | None = None) -> tuple[str, int, list[str]]:
        self.send(f"REQ {rid} {flags} {line.encode().hex()}")
        return self.replies(rid, answer)

    def replies(self, rid: str, answer: str | None = None) -> tuple[str, int, list[str]]:
        printed, asked = b"", []
        while True:
            fields = self.port.line(timeout=10)
            assert fields is not None, "the relay did not answer within 10 s"
            kind, got = fields[0], fields[1]
            if got != rid:
                continue
            if kind == "OUT":
                printed += bytes.fromhex(fields[2])
            elif kind == "ASK":
                asked.append(bytes.fromhex(fields[2]).decode())
                if answer is not None:
                    self.send(f"ANS {rid} {answer}")
            elif kind == "END":
                return printed.decode(), int(fields[2]), asked


def workstation(session, line: str, as_json: bool = False) -> tuple[str, int]:
    """What `invoke acli -c LINE` prints for the same session."""
    lines = []
    status = acli_shell.run_one(session, line, as_json=as_json, yes=True, out=lines.append, ask=None)
    return "".join(text + "\n" for text in lines), status


def test_a_line_typed_in_the_cvm_prints_what_the_workstation_prints():
    here, there = lab_session(), lab_session()
    guest = Guest(there)
    for line in ("net.list", "net.create web vlan=50 ip_config=10.50.0.1/24", "vm.create 'SQL User 05' memory=128M",
                 "vm.list", "vm.get 'SQL User 05'", "vm.frobnicate x", "net.create web vlan=51", "help"):
        expected, status = workstation(here, line)
        assert guest.request("1", "-", line) == (expected, status, []), line
    expected, status = workstation(here, "vm.list", as_json=True)
    assert guest.request("2", "j", "vm.list") == (expected, status, [])
    assert '"SQL User 05"' in expected


def test_a_delete_asks_the_cvm_s_terminal_and_no_keeps_the_vm():
    session = lab_session()
    guest = Guest(session)
    guest.request("1", "-", "vm.create web1")
    printed, status, asked = guest.request("2", "t", "vm.delete web1", answer="no")
    assert asked == ["Delete 1 VMs? (yes/no) "] and status == 0 and "not confirmed" in printed
    assert [vm.name for vm in session.topo.vms] == ["web1"]
    printed, status, asked = guest.request("3", "t", "vm.delete web1", answer="yes")
    assert len(asked) == 1 and status == 0 and session.topo.vms == []


def test_without_a_terminal_or_with_y_nothing_is_asked():
    session = lab_session()
    guest = Guest(session)
    guest.request("1", "-", "vm.create a")
    guest.request("2", "-", "vm.create b")
    assert guest.request("3", "ty", "vm.delete a")[2] == []
    assert guest.request("4", "-", "vm.delete b")[2] == []
    assert session.topo.vms == []


def test_a_client_gone_mid_question_leaves_nothing_for_the_next():
    session = lab_session()
    guest = Guest(session)
    guest.request("1", "-", "vm.create web1")
    guest.send(f"REQ 2 t {b'vm.delete web1'.hex()}")  # asked, and the client is killed before it answers
    fields = guest.port.line(timeout=10)
    assert fields[:2] == ["ASK", "2"]
    printed, status, _ = guest.request("3", "-", "vm.list")  # the next acli: its own answer, whole
    assert status == 0 and "web1" in printed
    assert [vm.name for vm in session.topo.vms] == ["web1"]  # the unanswered question was a no


def test_noise_stale_answers_and_broken_lines_are_not_requests():
    session = lab_session()
    guest = Guest(session)
    guest.send("ANS 7 yes")
    guest.send("hello there")
    guest.send("REQ 8 -")
    guest.send("REQ 9 - zz-not-hex")
    printed, status, _ = guest.replies("9")
    assert status == 2 and "did not arrive whole" in printed
    guest.send("REQ 10 - fffe")  # hex, but not UTF-8
    assert guest.replies("10")[1] == 2
    assert guest.request("11", "-", "net.list")[1] == 0


def test_the_connection_ends_when_the_cvm_goes():
    guest = Guest(lab_session())
    guest.sock.close()
    guest.thread.join(timeout=5)
    assert not guest.thread.is_alive()
