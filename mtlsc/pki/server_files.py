"""The server's own certificate and key files, as nginx will read them (checks/server_cert.py judges
them). They are nginx paths: read only when this machine has them, once per file version.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mtlsc import ir

MAX_FILE = 1 << 20  # a certificate chain or key file; anything larger is not one


@dataclass(frozen=True)
class ServerFiles:
    certs: tuple[x509.Certificate, ...] = ()  # as in the file: the leaf, then the chain nginx sends
    key: object | None = None  # the private key
    unreadable: tuple[str, ...] = ()  # "PATH: reason" of files that exist but cannot be read here
    unusable: tuple[str, ...] = ()  # why nginx could not use a file that was read
    absent: bool = False  # the certificate file is not on this machine: nothing to say


def _read(path: str) -> bytes | OSError | None:
    """The file's bytes; None when it is not there (or the path is relative: nginx's prefix decides)."""
    if not os.path.isabs(path) or not os.path.exists(path):
        return None
    try:
        with open(path, "rb") as f:
            return f.read(MAX_FILE + 1)
    except OSError as exc:
        return exc


def _stamp(path: str):
    try:
        st = os.stat(path)
        return st.st_mtime_ns, st.st_size
    except OSError:
        return None


def server_files(server: ir.Server) -> ServerFiles:
    return _load(server.certificate, server.key, _stamp(server.certificate), _stamp(server.key))


@functools.lru_cache(maxsize=64)
def _load(cert_path: str, key_path: str, _cert_stamp, _key_stamp) -> ServerFiles:
    cert_data, key_data = _read(cert_path), _read(key_path)
    if cert_data is None:
        return ServerFiles(absent=True)
    unreadable, unusable = [], []
    certs: tuple[x509.Certificate, ...] = ()
    if isinstance(cert_data, OSError):
        unreadable.append(f"`{cert_path}`: {cert_data.strerror or cert_data}")
    else:
        try:
            certs = tuple(x509.load_pem_x509_certificates(cert_data))
        except ValueError:
            unusable.append(f"`{cert_path}` holds no PEM certificate nginx can read")
    key = None
    if isinstance(key_data, OSError):
        unreadable.append(f"`{key_path}`: {key_data.strerror or key_data}")
    elif key_data is not None:
        try:
            key = serialization.load_pem_private_key(key_data, password=None)
        except TypeError:
            unusable.append(f"`{key_path}` is encrypted: nginx would need `ssl_password_file`, which mtlsc does not write")
        except (ValueError, Exception):
            unusable.append(f"`{key_path}` holds no PEM private key nginx can read")
    return ServerFiles(certs, key, tuple(unreadable), tuple(unusable))
