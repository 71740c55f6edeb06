"""Opaque page and resume tokens, bound to the tenant and to the query they continue.

The driver's paging state says where in the table a query stopped; handed out raw, it could be edited to
reach other partitions (the driver's docs warn of it). A token here is the paging state (or an export's
last token) sealed with an HMAC-SHA256 over the tenant, the kind of token, a fingerprint of the query
and an expiry time, with a key kept in the state folder (``secrets/query-token.key``, made on first use,
mode 0600). A token that was forged, cut, expired, or made for another query or tenant is refused with
:class:`BadPageToken`; nothing of it reaches Cassandra before its seal is checked.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import struct
import time
from pathlib import Path

from mysimbdp import credentials
from mysimbdp.errors import BadPageToken

VERSION = 1
MAX_TOKEN_CHARS = 4096
_HEAD = struct.Struct(">BQ")  # version, expiry (unix seconds)
_MAC = 32


def load_key(secrets_dir: Path) -> bytes:
    """The signing key (32 random bytes), made on first use."""
    path = secrets_dir / "query-token.key"
    try:
        key = bytes.fromhex(credentials.read_secret(path))
        if len(key) == 32:
            return key
    except (FileNotFoundError, ValueError):
        pass
    candidate = secrets.token_hex(32)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    credentials.write_secret(tmp, candidate)
    try:
        # two processes making it at once: the first link wins and both read that one
        import os

        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return bytes.fromhex(credentials.read_secret(path))


def fingerprint(kind: str, tenant: str, table: str, query: object) -> bytes:
    """What a token is bound to: its kind, the tenant, the table and the query in canonical JSON."""
    text = json.dumps([kind, tenant, table, query], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).digest()


class Sealer:
    def __init__(self, key: bytes, hours: int = 24) -> None:
        self._key = key
        self.seconds = hours * 3600

    def seal(self, bound_to: bytes, payload: bytes) -> str:
        head = _HEAD.pack(VERSION, int(time.time()) + self.seconds)
        mac = hmac.new(self._key, head + bound_to + payload, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(head + payload + mac).decode("ascii").rstrip("=")

    def open(self, token: object, bound_to: bytes) -> bytes:
        """The payload of ``token`` if it is genuine, unexpired and bound to ``bound_to``; else BadPageToken."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            raise BadPageToken("the page token is not one this API gave out")
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (ValueError, TypeError):
            raise BadPageToken("the page token is not one this API gave out") from None
        if len(raw) < _HEAD.size + _MAC:
            raise BadPageToken("the page token is cut short")
        head, payload, mac = raw[: _HEAD.size], raw[_HEAD.size : -_MAC], raw[-_MAC:]
        want = hmac.new(self._key, head + bound_to + payload, hashlib.sha256).digest()
        if not hmac.compare_digest(mac, want):
            raise BadPageToken(
                "the page token does not belong to this query",
                hint="send the same query (table, filters, columns, limit, page size) the token came with",
            )
        version, expires = _HEAD.unpack(head)
        if version != VERSION or expires < time.time():
            raise BadPageToken("the page token has expired", hint="run the query again from its first page")
        return payload
