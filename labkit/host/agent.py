"""Host side of the guest agent: protocol LK1 over the virtio-serial channel org.labkit.agent.0.

libvirt binds the channel to a unix socket (`<channel type='unix'><source mode='bind'>`, the way
it wires qemu-guest-agent); labkit reads it with a plain socket, so every wait has a deadline
that holds (connect, send, receive), one guest's trouble never touches another's socket, and no
libvirt connection is involved at all. One request, one answer, one line each:

    host  -> guest   LK1 <id> <verb> <base64 payload>\\n
    guest -> host    LK1 <id> <exit status> <base64 output>\\n

Verbs (version 1): `hello` (answers "<hostname> LK1"; the agent starts once the guest has booted
and configured its network) and `run` (payload: a shell command; the answer carries its exit
status and combined stdout/stderr). Ids are unique within this host process and carry its pid,
so an answer to an earlier request, or to another process, is never taken for this one. An agent
that (re)starts says `LK1 0 0 <base64 start>`: a request in flight was lost with the old one.
The guest end is images/guest/labkit-agent.c.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import os
import secrets
import socket
import time
from dataclasses import dataclass

from ..errors import HostError

PROTOCOL = "LK1"
_PROCESS = f"{os.getpid():x}{secrets.token_hex(2)}"
_SEQUENCE = itertools.count(1)  # next() on a count is atomic under the GIL: ids stay unique across threads


class AgentError(HostError):
    """The agent of a named VM did not answer in time, answered garbage, or lost the request."""


@dataclass(frozen=True)
class Result:
    status: int
    output: str


def new_id() -> str:
    return f"{_PROCESS}.{next(_SEQUENCE)}"


class Agent:
    """One guest's agent, reached through its channel socket; use in `with` (closes the socket)."""

    def __init__(self, domain: str, path: str):
        self.domain, self.path = domain, path
        self._sock: socket.socket | None = None
        self._buffer = b""

    def __enter__(self) -> "Agent":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock, self._buffer = None, b""

    # requests --------------------------------------------------------------

    def run(self, command: str, timeout: float = 30) -> Result:
        return self.request("run", command, timeout)

    def request(self, verb: str, payload: str = "", timeout: float = 30) -> Result:
        """Send one request and wait for its answer, all within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        ident = new_id()
        encoded = base64.b64encode(payload.encode()).decode() or "-"
        self._send(f"{PROTOCOL} {ident} {verb} {encoded}\n".encode(), deadline, verb, timeout)
        while True:
            parts = self._next_answer(deadline, verb, timeout)
            if parts[1] == ident:
                return self._result(parts)
            if parts[1] == "0":  # the agent (re)started: whatever it was doing for us is gone
                self.close()
                raise AgentError(f"the agent of {self.domain} restarted while it ran {verb}; the request was lost")

    def wait_boot(self, timeout: float) -> str:
        """Wait until the agent answers `hello` (the guest has booted); returns its hostname.

        One request is enough: it waits in QEMU until the guest opens its port. The connection
        itself is retried, since the socket appears only once libvirt has started the domain."""
        deadline = time.monotonic() + timeout
        ident = new_id()
        self._send(f"{PROTOCOL} {ident} hello -\n".encode(), deadline, "hello", timeout, booting=True)
        while True:
            parts = self._next_answer(deadline, "hello", timeout, booting=True)
            if parts[1] == ident:
                return self._result(parts).output.split(" ")[0]

    # the socket --------------------------------------------------------------

    def _connect(self, deadline: float, booting: bool) -> socket.socket:
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                sock.connect(self.path)
                return sock
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                sock.close()
                if not booting or time.monotonic() >= deadline:
                    raise AgentError(f"cannot reach the agent of {self.domain} ({exc.strerror} at {self.path}); "
                                     f"is the VM running? (lab.status)") from None
                time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
            except OSError:
                sock.close()
                raise

    def _send(self, line: bytes, deadline: float, verb: str, timeout: float, booting: bool = False) -> None:
        try:
            if self._sock is None:
                self._sock = self._connect(deadline, booting)
            self._sock.settimeout(max(0.01, deadline - time.monotonic()))
            self._sock.sendall(line)
        except (TimeoutError, socket.timeout):
            self.close()
            raise AgentError(f"{self.domain} did not take {verb} within {timeout:.0f} s") from None
        except OSError as exc:
            self.close()
            raise AgentError(f"cannot send {verb} to the agent of {self.domain} ({exc.strerror or exc})") from None

    def _next_answer(self, deadline: float, verb: str, timeout: float, booting: bool = False) -> list[str]:
        """The next well-formed LK1 line, split; lines of other protocols are skipped."""
        while True:
            line = self._readline(deadline, verb, timeout, booting)
            parts = line.split(b" ")
            if len(parts) >= 3 and parts[0] == PROTOCOL.encode():
                try:
                    return [p.decode("ascii") for p in parts]
                except UnicodeDecodeError:
                    break
            if parts[0] == PROTOCOL.encode():
                break
        self.close()
        raise AgentError(f"the agent of {self.domain} answered {verb} with a garbled line: {line[:80]!r}")

    def _readline(self, deadline: float, verb: str, timeout: float, booting: bool) -> bytes:
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._sock is None:
                self.close()  # a late answer must not be taken for the next request's: a new socket
                what = "did not come up" if booting else f"did not answer {verb}"
                raise AgentError(f"{self.domain} {what} within {timeout:.0f} s")
            self._sock.settimeout(remaining)
            try:
                chunk = self._sock.recv(65536)
            except (TimeoutError, socket.timeout):
                continue
            except OSError as exc:
                self.close()
                raise AgentError(f"the agent channel of {self.domain} failed ({exc.strerror or exc})") from None
            if not chunk:
                self.close()
                raise AgentError(f"the agent channel of {self.domain} closed; the VM may have stopped")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.rstrip(b"\r")

    def _result(self, parts: list[str]) -> Result:
        try:
            status = int(parts[2])
            output = base64.b64decode(parts[3], validate=True).decode(errors="replace") if len(parts) > 3 else ""
        except (ValueError, binascii.Error):
            self.close()
            raise AgentError(f"the agent of {self.domain} sent a garbled answer: {' '.join(parts)[:80]!r}") from None
        return Result(status, output)
