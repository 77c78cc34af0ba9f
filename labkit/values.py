"""What a value a user gives must be before it may reach another program (pure, no pydantic).

Each check returns the value or raises ValueError with one sentence that quotes the value (cut
to a readable length) and says what would be valid. The topology's models apply them to their
fields (so a topology file, acli and the API are checked alike, at the model's edge), and the
writers of other programs' inputs (dnsmasq's configuration) apply them again before writing.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata

DNS_NAME_MAX = 253  # RFC 1035: a name of at most 253 characters in text, labels of at most 63
_DNS_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
BOOT_FILE_MAX = 128  # DHCP's `file` field holds 128 bytes
_BOOT_FILE = re.compile(r"[A-Za-z0-9_.+/-]+")
PATH_MAX = 4095


def shown(value: object, limit: int = 60) -> str:
    """A value as an error quotes it: repr'd (control characters visible), long ones cut."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}...' ({len(str(value))} characters)"


def echo(text: str, limit: int = 60) -> str:
    """A value typed on a command line, as an error repeats it: as typed, cut when long."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def dns_name(value: str) -> str:
    """A DNS name (domain or host): labels of letters, digits and inner '-', joined by '.'."""
    if (not isinstance(value, str) or len(value) > DNS_NAME_MAX
            or not all(_DNS_LABEL.fullmatch(label) for label in value.split("."))):
        raise ValueError(f"{shown(value)} is not a DNS name; write it like lab.example.com "
                         f"(letters, digits, '-' and '.', at most {DNS_NAME_MAX} characters)")
    return value


def host_or_address(value: str) -> str:
    """A server given by IPv4 address or DNS name (a TFTP server)."""
    try:
        return str(ipaddress.IPv4Address(value))
    except (ipaddress.AddressValueError, ValueError):
        pass
    try:
        return dns_name(value)
    except ValueError:
        raise ValueError(f"{shown(value)} is not an IPv4 address or a DNS name; write it like 10.40.0.5 "
                         f"or tftp.lab.local") from None


def boot_file(value: str) -> str:
    """A boot file name as DHCP hands it out (pxelinux.0, efi/bootx64.efi)."""
    if not isinstance(value, str) or len(value) > BOOT_FILE_MAX or not _BOOT_FILE.fullmatch(value):
        raise ValueError(f"{shown(value)} is not a boot file name; use at most {BOOT_FILE_MAX} of letters, digits "
                         f"and _ . + / -")
    return value


VM_NAME_MAX = 80  # AHV's


def vm_name(value: str) -> str:
    """A VM's name as AHV takes it: any printable text up to 80 characters (SQL_User05, "web 1");
    labkit derives the names other programs see from it (names.domain_name, names.hostname)."""
    if (not isinstance(value, str) or not value.strip() or len(value) > VM_NAME_MAX or not printable_text(value)
            or value != value.strip()):
        raise ValueError(f"{shown(value)} is not a VM name; use 1-{VM_NAME_MAX} printable characters, "
                         f"not starting or ending with a space")
    return value


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def uuid_text(value: str) -> str:
    if not isinstance(value, str) or not _UUID.fullmatch(value):
        raise ValueError(f"{shown(value)} is not a UUID; write it like 6a0b4f0e-9a1c-5d2e-8f3b-1a6b5c4d3e2f (lowercase)")
    return value


def file_path(value: str) -> str:
    """A path to a file of the workstation's (a disk image): printable, no control characters."""
    if not isinstance(value, str) or not value or len(value.encode()) > PATH_MAX or not printable_text(value):
        raise ValueError(f"{shown(value)} is not a file path; give a path of printable characters, "
                         f"at most {PATH_MAX} bytes")
    return value


def printable_text(value: str) -> bool:
    """No control, format, surrogate or unassigned characters (a newline, a NUL, an escape...)."""
    return all(unicodedata.category(ch)[0] != "C" for ch in value)


def bounded_digits(text: str, max_digits: int = 9) -> int:
    """A decimal number typed by a user, refused before conversion when it is longer than
    `max_digits` (Python refuses to convert 4,301 digits; a lab needs far fewer)."""
    if not re.fullmatch(rf"[0-9]{{1,{max_digits}}}", text):
        raise ValueError(f"{shown(text)} is not a number of at most {max_digits} digits")
    return int(text)


SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}  # AHV's sizes are binary: 20G is 20 GiB
DISK_MIN = 1 << 20
DISK_MAX = 16 << 40  # a lab's volumes are sparse; a guest that filled one would fill the workstation first
_SIZE = re.compile(r"([0-9]{1,15})([KMGT]?)(?:i?B)?")


def disk_size(value: object) -> int:
    """A disk size as acli takes it (create_size=20G, new_size=512M; a bare number is bytes), in bytes."""
    if isinstance(value, bool):
        value = None
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.fullmatch(value.strip()) if isinstance(value, str) else None
        if match is None:
            raise ValueError(f"{shown(value)} is not a size; write it like 20G, 512M or 1T (binary units)")
        size = int(match.group(1)) * SIZE_UNITS[match.group(2)]
    if not DISK_MIN <= size <= DISK_MAX:
        raise ValueError(f"{shown(value)} is not a disk size this lab makes; use 1M to 16T")
    return size


def size_text(size: int) -> str:
    """Bytes as acli writes a size back: the largest binary unit that divides it (20G, 1536M)."""
    for unit in ("T", "G", "M", "K"):
        if size % SIZE_UNITS[unit] == 0:
            return f"{size // SIZE_UNITS[unit]}{unit}"
    return str(size)


ENTITY_NAME_MAX = 80


def entity_name(value: str) -> str:
    """An image's name as AHV takes it: printable text up to 80 characters, like a VM's."""
    if (not isinstance(value, str) or not value.strip() or len(value) > ENTITY_NAME_MAX or not printable_text(value)
            or value != value.strip()):
        raise ValueError(f"{shown(value)} is not an image name; use 1-{ENTITY_NAME_MAX} printable characters, "
                         f"not starting or ending with a space")
    return value


def annotation(value: str) -> str:
    if not isinstance(value, str) or len(value) > 1000 or not printable_text(value):
        raise ValueError(f"{shown(value)} is not a description; use at most 1000 printable characters")
    return value


def loopback_host(host: str | None) -> bool:
    """Whether a URL's host is this machine (localhost, 127.0.0.0/8, ::1): the only place labkit
    fetches anything from."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False
