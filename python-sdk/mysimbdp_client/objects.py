"""Binary objects (images, video, raw files) kept in the tenant's keyspace through the query API, streamed
both ways in constant memory: ``PUT`` with the size and, when the client can compute it first, the
SHA-256 (the server refuses a body whose checksum differs, and keeps no half object); ``GET`` of the
whole object or of one byte range (``Range``); ``HEAD`` for its metadata; listing by key prefix.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator
from urllib.parse import quote

import requests

from ._http import Http
from .errors import MysimbdpError, TransportError

BLOCK = 1 << 20


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    content_type: str
    sha256: str
    created: str  # ISO 8601, UTC
    expires: str | None  # ISO 8601, UTC; None: kept until deleted
    damaged: bool = False  # its row was changed outside the API: listed so that it can be deleted

    @classmethod
    def from_json(cls, d: dict) -> "ObjectInfo":
        if d.get("damaged"):
            return cls(d["key"], 0, "", "", "", None, True)
        return cls(d["key"], int(d["size"]), d["content_type"], d["sha256"], d["created"], d.get("expires"))


class ObjectReader(io.RawIOBase):
    """An object's bytes (or one range of them) as a read-only binary file, streamed from the server.
    ``info`` has the object's metadata (``size`` is the whole object's); ``length`` the bytes this reader
    gives. A short body (the server cut it off) raises TransportError rather than ending early."""

    def __init__(self, resp: requests.Response, info: ObjectInfo, length: int) -> None:
        super().__init__()
        self._resp = resp
        self._raw = resp.raw
        self.info = info
        self.length = length
        self.position = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self.position >= self.length:
            return 0
        want = min(len(b), self.length - self.position)
        try:
            data = self._raw.read(want)
        except Exception as exc:  # noqa: BLE001 - urllib3 and http.client raise several kinds
            raise TransportError(f"reading object {self.info.key!r} broke off", code="connection_broke") from exc
        if not data:
            raise TransportError(
                f"object {self.info.key!r} ended after {self.position} of {self.length} bytes", code="short_body"
            )
        n = len(data)
        b[:n] = data
        self.position += n
        return n

    def close(self) -> None:
        if not self.closed:
            self._resp.close()
        super().close()


class Objects:
    """The tenant's binary objects (``Client.objects``). Keys are 1-256 characters: letters, digits, ``.``,
    ``_``, ``-`` and ``/`` between names (``photos/2024/a.jpg``)."""

    def __init__(self, http: Http) -> None:
        self.http = http

    @staticmethod
    def _path(key: str) -> str:
        return "/v1/objects/" + quote(key, safe="/")

    def put(
        self,
        key: str,
        data: bytes | str | os.PathLike | BinaryIO,
        content_type: str | None = None,
        ttl: int | None = None,
    ) -> ObjectInfo:
        """Store ``data`` under ``key`` (replacing an object there only once the new one is whole): bytes,
        a path, or a binary file open for reading (sent from where it stands to its end). For bytes and
        paths the SHA-256 is sent along and checked by the server. ``ttl``: seconds until it expires."""
        headers = {"Content-Type": content_type or "application/octet-stream"}
        body: bytes | BinaryIO
        fh: BinaryIO | None = None
        if isinstance(data, (bytes, bytearray, memoryview)):
            body = bytes(data)
            headers["X-Checksum-Sha256"] = hashlib.sha256(body).hexdigest()
            length = len(body)
        elif isinstance(data, (str, os.PathLike)):
            path = Path(data)
            h = hashlib.sha256()
            with open(path, "rb") as src:
                for block in iter(lambda: src.read(BLOCK), b""):
                    h.update(block)
            headers["X-Checksum-Sha256"] = h.hexdigest()
            fh = body = open(path, "rb")
            length = os.fstat(fh.fileno()).st_size
        else:
            if not data.seekable():
                raise ValueError("a file to put must be seekable (its size is sent first); or pass bytes")
            here = data.tell()
            length = data.seek(0, io.SEEK_END) - here
            data.seek(here)
            body = data
        headers["Content-Length"] = str(length)
        params = {"ttl": ttl} if ttl is not None else None
        try:
            out = self.http.data(
                "PUT", self._path(key), f"storing object {key}", data=body, headers=headers, params=params,
                timeout=(self.http.timeout, 3600), retry="busy" if isinstance(body, bytes) else "none",
            )  # fmt: skip
        finally:
            if fh is not None:
                fh.close()
        return ObjectInfo.from_json(out)

    def head(self, key: str) -> ObjectInfo:
        """The object's metadata (NotFoundError when there is none)."""
        resp = self.http.call("HEAD", self._path(key), f"reading object {key}", retry="reads")
        return _info(key, resp)

    def open(self, key: str, start: int | None = None, end: int | None = None) -> ObjectReader:
        """The object as a file to read, streamed; ``start``/``end`` (end excluded, as in a slice) ask the
        server for that part only (206). Use it in a ``with`` block, or close it."""
        headers = {}
        if start is not None or end is not None:
            first = start or 0
            if end is not None and end <= first:
                raise ValueError("end must be past start")
            headers["Range"] = f"bytes={first}-" + ("" if end is None else str(end - 1))
        resp = self.http.call(
            "GET", self._path(key), f"reading object {key}", headers=headers, stream=True,
            timeout=(self.http.timeout, 120), retry="reads",
        )  # fmt: skip
        resp.raw.decode_content = False
        return ObjectReader(resp, _info(key, resp), int(resp.headers.get("Content-Length", "0")))

    def get(self, key: str) -> bytes:
        """The whole object, checked against its SHA-256."""
        with self.open(key) as f:
            data = f.read()
        if hashlib.sha256(data).hexdigest() != f.info.sha256:
            raise MysimbdpError(f"object {key!r} arrived damaged (its sha256 differs)", code="checksum_mismatch")
        return data

    def delete(self, key: str) -> None:
        self.http.data("DELETE", self._path(key), f"deleting object {key}")

    def list(self, prefix: str = "", page_size: int | None = None) -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in key order, a page at a time."""
        token: str | None = None
        while True:
            params: dict = {"prefix": prefix}
            if page_size is not None:
                params["page_size"] = page_size
            if token:
                params["page_token"] = token
            data = self.http.data("GET", "/v1/objects", "listing objects", params=params, retry="reads")
            for d in data["objects"]:
                yield ObjectInfo.from_json(d)
            token = data.get("next_page_token")
            if not token:
                return


def _info(key: str, resp: requests.Response) -> ObjectInfo:
    h = resp.headers
    size = h.get("Content-Range", "").rpartition("/")[2] or h.get("Content-Length", "0")
    return ObjectInfo(
        key, int(size), h.get("Content-Type", "application/octet-stream"), h.get("X-Checksum-Sha256", ""),
        h.get("X-Created", ""), h.get("X-Expires"),
    )  # fmt: skip
