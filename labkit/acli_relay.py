"""acli in the CVM: the lab's relay between its CVMs' acli channels and the control plane.

AHV's trainees type `acli ...` in a CVM's shell. The CVM here is a guest with a virtio-serial
port `org.labkit.acli.0` (render.ACLI_CHANNEL); libvirt binds it to a unix socket on the host
(paths.acli_socket). This process, one per lab (host/relay.py starts and stops it, the plan
keeps it running), stays connected to every such socket of the lab and runs each line it is
sent through `acli_shell.run_one`, the code `invoke acli -c` runs: the same parser, output and
errors, the same control plane and pipeline, one line at a time (acli's lab lock is a file lock,
which threads of one process would share).

The protocol (LKA1): lines of ASCII, payloads hex-encoded (a line, or a question, can hold any
character but can never be mistaken for the framing), each tagged with the request's id so that
what a killed client left in the port is never taken for the next one's:

    guest: REQ <id> <flags> <hex line>     flags: y (-y), j (-o json), t (a person at a terminal)
    host:  OUT <id> <hex text>             zero or more, in order
    host:  ASK <id> <hex question>         before a delete, only with t and without y
    guest: ANS <id> yes|no
    host:  END <id> <exit status>
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import socket
import sys
import threading
import time
import traceback

from . import memo, state
from .paths import ACLI_SUFFIX, RUN_DIR, relay_pidfile

SCAN_SECONDS = 1.0  # how often new CVM sockets (a CVM started, or restarted) are looked for
ANSWER_SECONDS = 300.0  # a question nobody answers is a "no"
MAX_LINE = 64 * 1024  # a request longer than any acli line is refused, not buffered without end
CHUNK = 2048  # bytes of output per OUT line


class Port:
    """One CVM's acli channel: framed lines in and out."""

    def __init__(self, sock: socket.socket, name: str):
        self.sock, self.name, self.pending = sock, name, b""

    def send(self, kind: str, rid: str, payload: str = "") -> None:
        self.sock.sendall(f"{kind} {rid} {payload}".rstrip().encode() + b"\n")

    def send_text(self, rid: str, text: str) -> None:
        data = text.encode()
        for start in range(0, len(data), CHUNK):
            self.send("OUT", rid, data[start:start + CHUNK].hex())

    def line(self, timeout: float | None = None) -> list[str] | None:
        """The next line's fields; None at the end of the stream or after `timeout`."""
        self.sock.settimeout(timeout)
        while b"\n" not in self.pending:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return None
            if not data:
                raise EOFError
            self.pending += data
            if len(self.pending) > 2 * MAX_LINE + 64 and b"\n" not in self.pending:
                self.pending = b""  # garbage without an end: dropped, the next request starts afresh
        raw, self.pending = self.pending.split(b"\n", 1)
        return raw.decode("ascii", errors="replace").split()


def decode(field: str) -> str | None:
    try:
        return bytes.fromhex(field).decode()
    except (ValueError, UnicodeDecodeError):
        return None


class Relay:
    def __init__(self, lab: str, session=None):
        """`session()`: the acli session a line runs in (the live lab's; a test gives its own)."""
        self.lab, self.session = lab, session
        self.gate = threading.Lock()  # one acli line at a time, whichever CVM it comes from
        self.connected: set[str] = set()
        self.lock = threading.Lock()

    def scan(self) -> None:
        """Connect to every acli socket of the lab not connected yet (refused: its CVM is not
        running; tried again at the next scan)."""
        folder = RUN_DIR / self.lab / "agents"
        for path in sorted(folder.glob(f"*{ACLI_SUFFIX}")) if folder.is_dir() else ():
            with self.lock:
                if str(path) in self.connected:
                    continue
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(2)
                sock.connect(str(path))
            except OSError:
                sock.close()
                continue
            with self.lock:
                self.connected.add(str(path))
            threading.Thread(target=self.serve, args=(Port(sock, path.name), str(path)), daemon=True).start()

    def serve(self, port: Port, path: str) -> None:
        try:
            waiting = None
            while True:
                fields = waiting or port.line()
                waiting = None
                if fields is None or len(fields) != 4 or fields[0] != "REQ":
                    continue  # an answer to a question already given up on, or noise: not a request
                _, rid, flags, payload = fields
                line = decode(payload)
                if line is None or len(payload) > 2 * MAX_LINE:
                    port.send_text(rid, "acli: the command line did not arrive whole (not UTF-8 text); type it again\n")
                    port.send("END", rid, "2")
                    continue
                waiting = self.run(port, rid, flags, line)
        except (EOFError, OSError):
            pass  # the CVM stopped (or restarted): the next scan connects again
        finally:
            port.sock.close()
            with self.lock:
                self.connected.discard(path)

    def run(self, port: Port, rid: str, flags: str, line: str) -> list[str] | None:
        """Run one line; returns a request that arrived while a question waited (its client gave up)."""
        from . import acli_shell

        arrived: list[list[str]] = []

        def ask(question: str) -> bool:
            port.send("ASK", rid, question.encode().hex())
            deadline = time.monotonic() + ANSWER_SECONDS
            while time.monotonic() < deadline:
                fields = port.line(timeout=max(0.1, deadline - time.monotonic()))
                if fields and fields[:2] == ["ANS", rid]:
                    return fields[2:] == ["yes"]
                if fields and fields[0] == "REQ":  # that client is gone; this is the next one's
                    arrived.append(fields)
                    return False
            return False

        out = lambda text: port.send_text(rid, text + "\n")  # noqa: E731
        session = self.session() if self.session else acli_shell.LiveSession(self.lab)
        with self.gate:
            try:
                status = acli_shell.run_one(session, line, as_json="j" in flags, yes="y" in flags, out=out,
                                            ask=ask if "t" in flags else None)
            except (EOFError, ConnectionError):  # the port: its CVM went away
                raise
            except Exception:  # noqa: BLE001 - a labkit bug: said to the trainee in one line, logged whole
                traceback.print_exc()
                sys.stderr.flush()
                port.send_text(rid, "internal error in labkit's acli; see /var/log/labkit/"
                                    f"{self.lab}/acli-relay.log and please report it\n")
                status = 1
        port.send("END", rid, str(status))
        return arrived[0] if arrived else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labkit.acli_relay",
                                     description="Answer acli typed in a lab's CVMs (started by lab.up).")
    parser.add_argument("--lab", required=True)
    lab = parser.parse_args(argv).lab
    relay = Relay(lab)
    importlib.import_module("labkit.acli_shell")  # before it says it is ready: the first line is quick

    version = memo.code_digest()[:16]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    pidfile = relay_pidfile(lab)
    state.write_private(pidfile, f"{os.getpid()} {version}\n")
    print(f"labkit acli relay for lab {lab}: pid {os.getpid()}, labkit {version}", flush=True)
    mine = f"{os.getpid()} ".encode()
    try:
        # until lab.down stops it, or forgets the lab (its pid file gone: a lab.down that could not signal it)
        while (state.read_private(pidfile) or b"").startswith(mine):
            relay.scan()
            time.sleep(SCAN_SECONDS)
        return 0
    finally:
        if (state.read_private(pidfile) or b"").startswith(mine):
            pidfile.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
