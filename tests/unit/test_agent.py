"""The agent's host side (labkit/host/agent.py) against a scripted guest end on a real unix socket.

The guest end here is a test double for QEMU's socket; the real one is exercised by the
integration tests (tests/integration/test_agent.py). What is tested here is the host side's
contract: deadlines that hold, ids that never match another request, named failures.
"""

from __future__ import annotations

import base64
import socket
import threading
import time

import pytest

from labkit.host import agent
from labkit.host.agent import Agent, AgentError


def _answer(ident: str, status: int, text: str) -> bytes:
    return f"LK1 {ident} {status} {base64.b64encode(text.encode()).decode()}\n".encode()


class Guest:
    """Listens where QEMU would; `behave(request_line) -> bytes | None` answers each request."""

    def __init__(self, tmp_path, behave):
        self.path = str(tmp_path / "agent.sock")
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(self.path)
        self.server.listen(4)
        self.behave, self.seen = behave, []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            buffer = b""
            while True:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                buffer += chunk
                while b"\n" in buffer:
                    line, _, buffer = buffer.partition(b"\n")
                    self.seen.append(line.decode())
                    reply = self.behave(line.decode())
                    if reply:
                        conn.sendall(reply)
            conn.close()

    def close(self):
        self.server.close()


def test_run_returns_status_and_output(tmp_path):
    guest = Guest(tmp_path, lambda line: _answer(line.split()[1], 3, "hello world\n"))
    with Agent("vm1", guest.path) as a:
        result = a.run("echo hello world; exit 3", timeout=5)
    assert (result.status, result.output) == (3, "hello world\n")
    magic, ident, verb, payload = guest.seen[0].split(" ")
    assert (magic, verb, base64.b64decode(payload).decode()) == ("LK1", "run", "echo hello world; exit 3")


def test_an_answer_to_another_request_is_never_taken_for_this_one(tmp_path):
    def behave(line):
        ident = line.split()[1]
        return _answer("stale.1", 0, "late answer of an earlier request") + _answer(ident, 0, "mine")
    guest = Guest(tmp_path, behave)
    with Agent("vm1", guest.path) as a:
        assert a.run("x").output == "mine"


def test_request_ids_are_unique_and_carry_the_process(tmp_path):
    ids = {agent.new_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(i.startswith(agent._PROCESS + ".") for i in ids)


def test_a_guest_that_never_answers_fails_at_the_deadline_naming_it(tmp_path):
    guest = Guest(tmp_path, lambda line: None)
    started = time.monotonic()
    with Agent("vm-silent", guest.path) as a, pytest.raises(AgentError, match="vm-silent did not answer run within 1 s"):
        a.run("sleep 100", timeout=1)
    assert time.monotonic() - started < 1.5


def test_a_garbled_answer_is_a_named_failure(tmp_path):
    guest = Guest(tmp_path, lambda line: f"LK1 {line.split()[1]} zero !!notbase64\n".encode())
    with Agent("vm-garbled", guest.path) as a, pytest.raises(AgentError, match="agent of vm-garbled sent a garbled answer"):
        a.run("x")


def test_a_binary_line_is_a_named_failure(tmp_path):
    guest = Guest(tmp_path, lambda line: b"LK1 \xff\xfe 0 x\n")
    with Agent("vm-bin", guest.path) as a, pytest.raises(AgentError, match="agent of vm-bin answered run with a garbled line"):
        a.run("x", timeout=2)


def test_an_agent_that_restarts_mid_request_is_a_named_failure(tmp_path):
    guest = Guest(tmp_path, lambda line: _answer("0", 0, "start"))
    with Agent("vm-restart", guest.path) as a, pytest.raises(AgentError, match="agent of vm-restart restarted while it ran run"):
        a.run("x", timeout=5)


def test_a_closed_channel_is_a_named_failure(tmp_path):
    server = socket.socket(socket.AF_UNIX)
    path = str(tmp_path / "agent.sock")
    server.bind(path)
    server.listen(1)

    def close_at_once():
        conn, _ = server.accept()
        conn.recv(4096)
        conn.close()
    threading.Thread(target=close_at_once, daemon=True).start()
    with Agent("vm-gone", path) as a, pytest.raises(AgentError, match="agent channel of vm-gone closed"):
        a.run("x", timeout=5)


def test_no_socket_is_a_named_failure_at_once(tmp_path):
    started = time.monotonic()
    with Agent("vm-off", str(tmp_path / "none.sock")) as a, pytest.raises(AgentError, match="cannot reach the agent of vm-off"):
        a.run("x", timeout=5)
    assert time.monotonic() - started < 0.5


def test_waiting_for_boot_retries_the_socket_until_it_appears(tmp_path):
    holder = {}

    def appear_later():
        time.sleep(0.4)
        holder["guest"] = Guest(tmp_path, lambda line: _answer(line.split()[1], 0, "vm-late LK1"))
    threading.Thread(target=appear_later, daemon=True).start()
    with Agent("vm-late", str(tmp_path / "agent.sock")) as a:
        assert a.wait_boot(5) == "vm-late"


def test_waiting_for_boot_ends_at_its_deadline(tmp_path):
    started = time.monotonic()
    with Agent("vm-never", str(tmp_path / "none.sock")) as a, pytest.raises(AgentError, match="vm-never"):
        a.wait_boot(0.5)
    assert time.monotonic() - started < 1.0


def test_one_silent_guest_does_not_hold_up_another(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    silent = Guest(tmp_path / "a", lambda line: None)
    quick = Guest(tmp_path / "b", lambda line: _answer(line.split()[1], 0, "ok"))
    results = {}

    def ask(name, path, timeout):
        started = time.monotonic()
        try:
            with Agent(name, path) as a:
                a.run("x", timeout=timeout)
            results[name] = ("ok", time.monotonic() - started)
        except AgentError:
            results[name] = ("failed", time.monotonic() - started)
    threads = [threading.Thread(target=ask, args=("silent", silent.path, 3)),
               threading.Thread(target=ask, args=("quick", quick.path, 3))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results["quick"][0] == "ok" and results["quick"][1] < 0.5
    assert results["silent"][0] == "failed"
