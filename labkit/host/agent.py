"""Host side of the guest agent: protocol LK1 over the virtio-serial channel org.labkit.agent.0.

The channel is opened with libvirt (virDomainOpenChannel on a stream), so no
network is needed to reach a guest. One request, one answer, one line each:

    host  -> guest   LK1 <id> <verb> <base64 payload>\\n
    guest -> host    LK1 <id> <exit status> <base64 output>\\n

Verbs (version 1): `hello` (answers "<hostname> LK1" once the guest has
booted and configured its network), `run` (payload: a shell command; the
answer carries its exit status and combined stdout/stderr). Answers whose id
is not the one asked for are stale and skipped. The guest end is
images/guest/labkit-agent.
"""

from __future__ import annotations

import base64
import itertools
import threading
import time
from dataclasses import dataclass

import libvirt

from ..errors import HostError
from . import Connection
from ..render import AGENT_CHANNEL

PROTOCOL = "LK1"


@dataclass(frozen=True)
class Result:
    status: int
    output: str


class Agent(Connection):
    def __init__(self, conn: libvirt.virConnect, domain: str):
        self.conn, self.domain = conn, domain
        self._ids = itertools.count(1)
        self._stream = None
        self._buffer = b""

    def _open(self) -> None:
        try:
            dom = self.conn.lookupByName(self.domain)
            stream = self.conn.newStream(0)
            dom.openChannel(AGENT_CHANNEL, stream, libvirt.VIR_DOMAIN_CHANNEL_FORCE)
        except libvirt.libvirtError as exc:
            raise HostError(f"cannot open the agent channel of {self.domain} ({exc.get_error_message()}); "
                            f"is the VM running? (lab.status)") from None
        self._stream, self._buffer = stream, b""

    def close(self) -> None:
        if self._stream is not None:
            try:
                self._stream.abort()
            except libvirt.libvirtError:
                pass
            self._stream = None

    def request(self, verb: str, payload: str = "", timeout: float = 30) -> Result:
        if self._stream is None:
            self._open()
        ident = str(next(self._ids))
        line = f"{PROTOCOL} {ident} {verb} {base64.b64encode(payload.encode()).decode() or '-'}\n"
        self._stream.send(line.encode())
        deadline = time.monotonic() + timeout
        while True:
            answer = self._readline(deadline)
            if answer is None:
                self.close()  # a late answer must not be taken for the next request's
                raise TimeoutError(f"{self.domain} did not answer {verb} within {timeout:.0f} s")
            parts = answer.decode(errors="replace").split(" ")
            if len(parts) >= 3 and parts[0] == PROTOCOL and parts[1] == ident:
                output = base64.b64decode(parts[3]).decode(errors="replace") if len(parts) > 3 and parts[3] else ""
                return Result(int(parts[2]), output)

    def run(self, command: str, timeout: float = 30) -> Result:
        return self.request("run", command, timeout)

    def wait_boot(self, timeout: float) -> str:
        """Ask `hello` until the guest answers; returns its hostname."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.domain} did not come up within {timeout:.0f} s")
            try:
                return self.request("hello", timeout=min(2.0, remaining)).output.split(" ")[0]
            except TimeoutError:
                continue

    def _readline(self, deadline: float) -> bytes | None:
        """The next line from the stream, or None at the deadline (recv runs in a helper thread,
        since a libvirt stream read blocks and has no timeout of its own)."""
        while b"\n" not in self._buffer:
            chunk: list = []
            reader = threading.Thread(target=lambda box=chunk: box.append(self._recv()), daemon=True)
            reader.start()
            reader.join(max(0.0, deadline - time.monotonic()))
            if reader.is_alive():
                self.close()  # aborting the stream ends the blocked recv
                return None
            data = chunk[0]
            if not data:
                raise HostError(f"the agent channel of {self.domain} closed; the VM may have stopped")
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def _recv(self) -> bytes:
        try:
            return self._stream.recv(65536)
        except (libvirt.libvirtError, AttributeError):
            return b""
