"""Download adapter: an image a server on this workstation serves (image.create
source_url=http://127.0.0.1:8000/x.qcow2), fetched into labkit's cache.

labkit sends nothing to another machine: only loopback addresses are fetched from, with no proxy
(an http_proxy in the environment would send the request elsewhere) and no redirect followed (a
redirect could name another host). The file is kept under /var/cache/labkit/downloads/ (root's,
0700): it is the image's source, which lab.export and a later lab.up copy from again.
"""

from __future__ import annotations

import hashlib
import os
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from .. import state
from ..errors import HostError
from ..values import loopback_host

CACHE = Path("/var/cache/labkit/downloads")
TIMEOUT = 30.0  # seconds without a byte from the server


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        raise HostError(f"{req.full_url} redirects to {newurl}; labkit follows no redirect (it could lead off this "
                        f"workstation): give the final URL")


def fetch(url: str, what: str) -> str:
    """The path of `url`'s content, downloaded now into the cache (a file of the same URL replaced)."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https") or not loopback_host(parsed.hostname):
        raise HostError(f"{what}: {url} is not on this workstation; labkit downloads only from 127.0.0.1 or localhost")
    folder = state.private_dir(CACHE)
    name = re.sub(r"[^A-Za-z0-9._-]", "_", Path(parsed.path).name)[:80] or "download"
    target = folder / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{name}"
    partial = target.with_name(f".{target.name}.{os.getpid()}.part")
    # a server of this workstation's own, with the certificate it made for itself: not checked
    context = ssl._create_unverified_context() if parsed.scheme == "https" else None
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect(),
                                         urllib.request.HTTPSHandler(context=context))
    try:
        with opener.open(url, timeout=TIMEOUT) as response, \
                open(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600),
                     "wb") as out:
            while chunk := response.read(1 << 20):
                out.write(chunk)
        os.replace(partial, target)
    except urllib.error.HTTPError as exc:
        raise HostError(f"{what}: {url} answered {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc.strerror or exc
        raise HostError(f"{what}: could not download {url} ({reason}); is the server running?") from None
    finally:
        partial.unlink(missing_ok=True)
    return str(target)
