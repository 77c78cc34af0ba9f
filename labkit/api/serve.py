"""`invoke lab.serve`: the Prism server, in the foreground (Ctrl-C stops it), over HTTPS with a
certificate labkit makes once (cryptography: a self-signed ECDSA P-256 certificate for localhost
and 127.0.0.1, and the bind address) and keeps root-only in /var/lib/labkit/prism/; plain HTTP
only when asked (--insecure-http)."""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

from .. import state
from ..errors import LabkitError

CERT_DIR = Path("/var/lib/labkit/prism")


def certificate(bind: str, folder: Path = CERT_DIR) -> tuple[Path, Path]:
    """(certificate, key) for the server, made on first use and kept (0600, root's)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    cert, key = folder / "server.crt", folder / "server.key"
    names = {"localhost", "127.0.0.1", bind}
    if cert.exists() and key.exists():
        existing = x509.load_pem_x509_certificate(cert.read_bytes())
        try:
            sans = existing.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            covered = {str(v) for v in sans.get_values_for_type(x509.DNSName)} | \
                      {str(v) for v in sans.get_values_for_type(x509.IPAddress)}
        except x509.ExtensionNotFound:
            covered = set()
        if names <= covered and existing.not_valid_after_utc > datetime.datetime.now(datetime.timezone.utc):
            return cert, key
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    private = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "labkit Prism")])
    alt = []
    for name in sorted(names):
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    now = datetime.datetime.now(datetime.timezone.utc)
    issued = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(private.public_key())
              .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
              .not_valid_after(now + datetime.timedelta(days=825))
              .add_extension(x509.SubjectAlternativeName(alt), critical=False)
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .sign(private, hashes.SHA256()))
    state.write_private(key, private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
    state.write_private(cert, issued.public_bytes(serialization.Encoding.PEM))
    return cert, key


def serve(bind: str, port: int, insecure_http: bool, say=print) -> None:
    import uvicorn

    from .app import create_app

    try:
        ipaddress.ip_address(bind)
    except ValueError:
        raise LabkitError(f"--bind {bind} is not an IP address; use 127.0.0.1 (the default) or an address of this host") from None
    if not 1 <= port <= 65535:
        raise LabkitError(f"--port {port} is not a TCP port")
    tls = {} if insecure_http else dict(zip(("ssl_certfile", "ssl_keyfile"), map(str, certificate(bind))))
    scheme = "http" if insecure_http else "https"
    say(f"Prism for this host's labs on {scheme}://{bind}:{port}/ (API docs: /api/docs); Ctrl-C stops it")
    say("log in as a lab's admin: its password is in /run/labkit/<lab>/admin.password")
    config = uvicorn.Config(create_app(), host=bind, port=port, log_level="warning", access_log=False,
                            server_header=False, **tls)
    try:
        uvicorn.Server(config).run()
    except OSError as exc:
        raise LabkitError(f"cannot serve on {bind}:{port} ({exc.strerror}); choose another --port") from None
