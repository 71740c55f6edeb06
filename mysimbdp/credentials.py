"""Secrets: generated passwords kept in the state folder (mode 0600), and password hashes.

Tenants' passwords are stored only as bcrypt hashes (in the platform keyspace). The broker needs its own
hash format in its password file: Mosquitto's salted PBKDF2-SHA512 (``$7$``), made here so that a
password never appears on a command line.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path

import bcrypt

BCRYPT_ROUNDS = 12


def generate_password(nbytes: int = 24) -> str:
    return secrets.token_urlsafe(nbytes)


def write_secret(path: Path, value: str | dict) -> None:
    """Write a secret file atomically with mode 0600 (the folder 0700)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    data = json.dumps(value) if isinstance(value, dict) else value
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(data)
    os.replace(tmp, path)


def read_secret(path: Path) -> str:
    return path.read_text().strip()


def read_secret_json(path: Path) -> dict:
    return json.loads(path.read_text())


def client_password(given: str | None, user: str) -> str:
    """A tenant client's password: the option, else $MYSIMBDP_PASSWORD, else a prompt on a terminal."""
    import getpass
    import sys

    from .errors import UsageError

    password = given or os.environ.get("MYSIMBDP_PASSWORD")
    if password is not None:
        return password
    if not sys.stdin.isatty():
        raise UsageError("no password", hint="use -p, $MYSIMBDP_PASSWORD, or run in a terminal")
    return getpass.getpass(f"password for {user}: ")


def hash_password(password: str) -> str:
    """bcrypt hash (cost 12) of a tenant's password."""
    return bcrypt.hashpw(_pw_bytes(password), bcrypt.gensalt(BCRYPT_ROUNDS)).decode("ascii")


def check_password(password: str, hashed: str) -> bool:
    try:
        return bcrypt.checkpw(_pw_bytes(password), hashed.encode("ascii"))
    except ValueError:
        return False


def _pw_bytes(password: str) -> bytes:
    # bcrypt reads at most 72 bytes (and bcrypt>=5 refuses more); pre-hash longer passwords so that
    # every byte counts, in the same way on hashing and on checking.
    raw = password.encode("utf-8")
    if len(raw) > 72:
        raw = base64.b64encode(hashlib.sha256(raw).digest())
    return raw


def mosquitto_hash(password: str, iterations: int = 20000) -> str:
    """A Mosquitto 2.0 password-file hash: ``$7$<iterations>$<salt b64>$<pbkdf2-sha512 b64>``."""
    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def check_mosquitto_hash(password: str, hashed: str) -> bool:
    try:
        _, kind, iterations, salt, digest = hashed.split("$")
        if kind != "7":
            return False
        ours = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), base64.b64decode(salt), int(iterations))
        return hmac.compare_digest(ours, base64.b64decode(digest))
    except (ValueError, TypeError):
        return False
