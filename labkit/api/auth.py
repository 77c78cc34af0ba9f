"""Who is asking: a lab's user, by basic auth (`NAME` or `NAME@LAB`) or Prism's `X-ntnx-api-key`,
or a web session; the lab a user belongs to is the only lab they see (every other lab's objects
are not found: 404, never 403).

Passwords are checked with scrypt (users.py), which takes tens of milliseconds: a verified one is
remembered for a minute as an HMAC under a key of this process (never the password itself), so
the API answers in milliseconds. Wrong passwords are slowed down: from the fourth failure in a
row of one client and user name, each answer waits twice as long as the one before (up to 5 s,
without holding up anyone else), and a success forgets the count.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

from .. import state, users

VERIFIED_SECONDS = 60.0
SESSION_SECONDS = 8 * 3600
FREE_FAILURES, MAX_DELAY = 3, 5.0


@dataclass(frozen=True)
class Principal:
    lab: str
    user: str
    role: str

    @property
    def can_change(self) -> bool:
        return self.role == "admin"


class Unauthorized(Exception):
    """No valid credentials (401); `delay`: seconds to wait before answering (repeated failures)."""

    def __init__(self, message: str, delay: float = 0.0):
        super().__init__(message)
        self.delay = delay


class Authenticator:
    def __init__(self):
        self._key = secrets.token_bytes(32)
        self._verified: dict[bytes, tuple[float, Principal]] = {}
        self._failures: dict[tuple[str, str], int] = {}
        self._sessions: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    # --------------------------------------------------------------------- checking

    def principal(self, headers, client: str, cookie: str | None = None) -> Principal:
        """The caller, from a request's headers (raises Unauthorized)."""
        key = headers.get("x-ntnx-api-key")
        if key:
            found = next((Principal(lab, u.name, u.role) for lab in labs() if (u := users.verify_key(lab, key))), None)
            if found is None:
                raise self._failed(client, "<api key>", "the API key is not one of a lab's users")
            return found
        authorization = headers.get("authorization") or ""
        if authorization.lower().startswith("basic "):
            try:
                name, _, password = base64.b64decode(authorization[6:].strip(), validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise Unauthorized("the Authorization header is not basic auth (base64 of NAME:PASSWORD)") from None
            return self.password(name, password, client)
        if cookie:
            with self._lock:
                found = self._sessions.get(cookie)
            if found and found[0] > time.monotonic():
                return found[1]
            raise Unauthorized("the session has ended; log in again")
        raise Unauthorized("log in: basic auth with a lab's user (NAME or NAME@LAB), or X-ntnx-api-key")

    def known(self, headers) -> Principal | None:
        """The caller, if basic auth it verified within the last minute: no scrypt, no thread (the
        API's hot path)."""
        authorization = headers.get("authorization") or ""
        if not authorization.lower().startswith("basic "):
            return None
        try:
            name, _, password = base64.b64decode(authorization[6:].strip(), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        found = self._verified.get(self._digest(name, password))
        return found[1] if found and found[0] > time.monotonic() else None

    def _digest(self, name: str, password: str) -> bytes:
        user, _, lab = name.partition("@")
        return hmac.new(self._key, f"{lab}\0{user}\0{password}".encode(), hashlib.sha256).digest()

    def password(self, name: str, password: str, client: str) -> Principal:
        user, _, lab = name.partition("@")
        digest = self._digest(name, password)
        now = time.monotonic()
        with self._lock:
            known = self._verified.get(digest)
        if known and known[0] > now:
            return known[1]
        candidates = [lab] if lab else [one for one in labs() if any(u.name == user for u in users.listed(one))]
        found = [Principal(one, u.name, u.role) for one in candidates if (u := users.verify(one, user, password))]
        if len(found) != 1:
            why = ("more than one lab has this user with this password: log in as NAME@LAB" if found else
                   "wrong user name or password")
            raise self._failed(client, name, why)
        with self._lock:
            self._verified[digest] = (now + VERIFIED_SECONDS, found[0])
            self._failures.pop((client, name), None)
        return found[0]

    def _failed(self, client: str, name: str, why: str) -> Unauthorized:
        with self._lock:
            count = self._failures.get((client, name), 0) + 1
            self._failures[(client, name)] = count
        delay = 0.0 if count <= FREE_FAILURES else min(MAX_DELAY, 0.25 * 2 ** (count - FREE_FAILURES - 1))
        return Unauthorized(why, delay)

    # --------------------------------------------------------------------- web sessions

    def session(self, principal: Principal) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._sessions[token] = (time.monotonic() + SESSION_SECONDS, principal)
        return token

    def end(self, token: str) -> None:
        with self._lock:
            self._sessions.pop(token, None)


def labs() -> list[str]:
    """The labs on this host that have users (an effective state and a users file)."""
    if not state.RUN_DIR.is_dir():
        return []
    return sorted(p.name for p in state.RUN_DIR.iterdir()
                  if p.is_dir() and (p / users.FILE).exists() and state.read_effective(p.name) is not None)
