"""Who may use a lab's Prism (its REST API and web page): per lab, users with a role and a salted
password hash, and API keys (Prism's `X-ntnx-api-key`).

Kept in /run/labkit/<lab>/users.json, root's own and 0600 (state.write_private), removed with the
lab by lab.down. Passwords are hashed with scrypt (the standard library's hashlib.scrypt: 16 MiB
of memory a guess), API keys (32 random bytes) with SHA-256. `lab.up` makes an `admin` with a
random password, kept for the operator in /run/labkit/<lab>/admin.password (0600).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from . import state
from .errors import LabkitError

ROLES = ("admin", "viewer")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # no ':' (basic auth) and no '@' (NAME@LAB)
PASSWORD_MIN, PASSWORD_MAX = 8, 1024
_SCRYPT = {"n": 1 << 14, "r": 8, "p": 1, "dklen": 32, "maxmem": 64 << 20}
FILE, ADMIN_FILE = "users.json", "admin.password"


class UserError(LabkitError):
    """A user that cannot be added, changed or removed as asked; nothing was changed."""


@dataclass(frozen=True)
class User:
    name: str
    role: str  # admin: every change; viewer: reads only
    salt: str
    hash: str
    key_hash: str = ""  # SHA-256 of the user's API key, if one was made

    @property
    def can_change(self) -> bool:
        return self.role == "admin"


def _hash(password: str, salt: str) -> str:
    return hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), **_SCRYPT).hex()


def _load(lab: str) -> dict[str, User]:
    data = state.read_private(state.lab_dir(lab) / FILE)
    if not data:
        return {}
    return {u["name"]: User(**u) for u in json.loads(data)["users"]}


def _save(lab: str, users: dict[str, User]) -> None:
    state.write_private(state.own_lab_dir(lab) / FILE, json.dumps(
        {"version": 1, "users": [asdict(u) for u in sorted(users.values(), key=lambda u: u.name)]}, indent=1) + "\n")


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name or ""):
        raise UserError(f"{name!r:.70} is not a user name; use 1-64 of letters, digits, '_', '.' and '-', "
                        f"starting with a letter or digit")
    return name


def _check_password(password: str) -> None:
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX or any(ch in password for ch in "\r\n\0"):
        raise UserError(f"a password is {PASSWORD_MIN} to {PASSWORD_MAX} characters on one line; "
                        f"this one is {len(password)} long")


def add(lab: str, name: str, password: str, role: str) -> User:
    """A new user of the lab (its lock held: users.json is read, changed and written whole)."""
    check_name(name)
    if role not in ROLES:
        raise UserError(f"--role {role} is not a role; use {' or '.join(ROLES)}")
    _check_password(password)
    with state.LabLock(lab, lambda _m: None):
        users = _load(lab)
        if name in users:
            raise UserError(f"lab {lab} already has a user {name}; remove it first (lab.users --lab {lab} remove {name})")
        salt = secrets.token_hex(16)
        users[name] = User(name, role, salt, _hash(password, salt))
        _save(lab, users)
        return users[name]


def remove(lab: str, name: str) -> None:
    with state.LabLock(lab, lambda _m: None):
        users = _load(lab)
        if name not in users:
            raise UserError(f"lab {lab} has no user {name!r:.70}; its users: {', '.join(sorted(users)) or 'none'}")
        del users[name]
        _save(lab, users)


def new_key(lab: str, name: str) -> str:
    """A new API key for the user (the old one stops working); returned once, kept as its hash."""
    with state.LabLock(lab, lambda _m: None):
        users = _load(lab)
        if name not in users:
            raise UserError(f"lab {lab} has no user {name!r:.70}; its users: {', '.join(sorted(users)) or 'none'}")
        key = secrets.token_urlsafe(32)
        users[name] = User(**{**asdict(users[name]), "key_hash": hashlib.sha256(key.encode()).hexdigest()})
        _save(lab, users)
        return key


def listed(lab: str) -> list[User]:
    return sorted(_load(lab).values(), key=lambda u: u.name)


def verify(lab: str, name: str, password: str) -> User | None:
    """The user, if the password is theirs (constant-time comparison)."""
    user = _load(lab).get(name)
    if user is None or len(password) > PASSWORD_MAX:
        return None
    return user if hmac.compare_digest(_hash(password, user.salt), user.hash) else None


def verify_key(lab: str, key: str) -> User | None:
    digest = hashlib.sha256(key.encode()).hexdigest()
    return next((u for u in _load(lab).values() if u.key_hash and hmac.compare_digest(u.key_hash, digest)), None)


def admin_file(lab: str) -> Path:
    return state.lab_dir(lab) / ADMIN_FILE


def ensure_admin(lab: str) -> Path | None:
    """The lab's `admin`, made once with a random password kept in admin.password; returns that
    file when it was made now (None when the lab had its admin already)."""
    with state.LabLock(lab, lambda _m: None):
        if "admin" in _load(lab):
            return None
        password = secrets.token_urlsafe(12)
        state.write_private(state.own_lab_dir(lab) / ADMIN_FILE, password + "\n")
        users = _load(lab)
        salt = secrets.token_hex(16)
        users["admin"] = User("admin", "admin", salt, _hash(password, salt))
        _save(lab, users)
        return admin_file(lab)
