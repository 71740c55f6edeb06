"""Batch uploads: the resumable upload protocol of the upload API (port 8801), and the receipts.

An upload is opened with the file's name, size and SHA-256 (``POST /v1/uploads``); content the tenant
already sent is answered ``duplicate`` and not sent again. The body is streamed with ``PATCH`` from the
offset the server has. When the connection breaks, the client asks how much arrived (``HEAD``) and goes
on from there; a later run with the same content resumes the same session. The server checks every
constraint again and verifies the size and checksum before the file is staged as a job.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import requests

from ._http import BLOCK, Http, error_code, error_for, pause_for
from .errors import MysimbdpError, NotFoundError, SourceChangedError, TransportError

Progress = Callable[[int], None]  # called with the number of bytes of the file sent so far
BUSY_PATIENCE = 120  # seconds to wait for another client's upload of the same file that makes no progress
DONE = ("succeeded", "failed")  # a job's final statuses


def backoff(attempt: int, initial: float = 1.0, maximum: float = 15.0) -> float:
    """The wait before retry number ``attempt + 1`` (``attempt`` from 0): ``initial`` doubled each time."""
    return min(initial * 2 ** max(attempt, 0), maximum)


@dataclass(frozen=True)
class Source:
    """Bytes to upload under ``name``: ``prefix`` then ``path[start:end]`` (a whole file, or one part of a
    large CSV file that is its header plus a byte range of whole records: no temporary files)."""

    name: str
    path: Path
    start: int
    end: int
    prefix: bytes = b""
    sha256: str = ""
    stamp: tuple[int, int] = (0, 0)  # the file's size and modification time when it was planned

    @property
    def size(self) -> int:
        return len(self.prefix) + self.end - self.start

    def changed(self) -> bool:
        """Whether the file is no longer what was planned (and checksummed)."""
        try:
            return file_stamp(self.path) != self.stamp
        except OSError:
            return True

    def chunks(self, offset: int = 0, block: int = BLOCK) -> Iterator[bytes]:
        """The bytes from ``offset`` on."""
        if offset < len(self.prefix):
            yield self.prefix[offset:]
            offset = len(self.prefix)
        pos = self.start + offset - len(self.prefix)
        with open(self.path, "rb") as fh:
            fh.seek(pos)
            while pos < self.end:
                data = fh.read(min(block, self.end - pos))
                if not data:
                    raise OSError(f"{self.path} changed while being sent")
                pos += len(data)
                yield data

    def with_checksum(self) -> "Source":
        h = hashlib.sha256()
        for chunk in self.chunks():
            h.update(chunk)
        return Source(self.name, self.path, self.start, self.end, self.prefix, h.hexdigest(), self.stamp)


def whole(path: Path) -> Source:
    """A whole file as a source (without its checksum yet: ``.with_checksum()``)."""
    stamp = file_stamp(path)
    return Source(path.name, path, 0, stamp[0], stamp=stamp)


def file_stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


@dataclass
class Sent:
    """The receipt of one upload: ``staged`` (a job was made: ``job_id``) or ``duplicate`` (the same content
    was sent before, as ``job_id``); ``resumed_from`` the bytes an earlier attempt had already sent."""

    status: str  # staged | duplicate
    job_id: str
    resumed_from: int = 0
    seconds: float = 0.0


class _Body:
    """A request body that streams ``src`` from ``start`` (a file-like object with a length, so that the
    request carries a Content-Length), reporting progress and keeping to a byte rate."""

    def __init__(self, src: Source, start: int, progress: Progress | None, rate: int | None) -> None:
        self.chunks = src.chunks(start, block=max(4096, rate // 20) if rate else BLOCK)
        self.length = src.size - start
        self.start = start
        self.progress = progress
        self.rate = rate
        self.t0 = time.monotonic()
        self.sent = 0
        self.buf = memoryview(b"")
        self.pos = 0

    def __len__(self) -> int:
        return self.length

    def read(self, n: int = -1) -> bytes:
        # http.client asks for 8 KiB at a time: hand out views of the current block rather than
        # re-slicing (copying) the rest of it on every call.
        while self.pos >= len(self.buf):
            try:
                self.buf, self.pos = memoryview(next(self.chunks)), 0
            except StopIteration:
                return b""
        if n is None or n < 0:
            n = len(self.buf) - self.pos
        out = self.buf[self.pos : self.pos + n]
        self.pos += len(out)
        self._pace(len(out))
        return bytes(out)

    def _pace(self, n: int) -> None:
        self.sent += n
        if self.rate:
            ahead = self.sent / self.rate - (time.monotonic() - self.t0)
            if ahead > 0:
                time.sleep(ahead)
        if self.progress:
            self.progress(self.start + self.sent)


class Uploads:
    """The upload API as one tenant: constraints, uploads, receipts (jobs) and their rejected rows."""

    def __init__(self, http: Http) -> None:
        self.http = http

    def constraints(self) -> dict:
        """The tenant's constraints (formats, sizes, splitting), as the server checks them."""
        return self.http.call("GET", "/v1/constraints", "reading the constraints").json()

    def job(self, job_id: str) -> dict:
        """One receipt: status, rows, rejects, bytes, seconds."""
        return self.http.call("GET", f"/v1/jobs/{job_id}", "reading a receipt").json()

    def jobs(self, limit: int = 100, status: str | None = None) -> list[dict]:
        """The tenant's receipts, newest first."""
        params: dict = {"limit": limit}
        if status:
            params["status"] = status
        return self.http.call("GET", "/v1/jobs", "reading the receipts", params=params).json()["jobs"]

    def wait_job(self, job_id: str, timeout: float = 300.0, poll: float = 0.5) -> dict:
        """The receipt once the job has succeeded or failed; TimeoutError past ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job.get("status") in DONE:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {job.get('status')} after {timeout:.0f}s")
            time.sleep(poll)

    def rejects(self, job_id: str) -> str:
        """The rows the tenant's app rejected, as the CSV it wrote; "" when it rejected none (NotFoundError
        when there is no such job, or its rejects were not kept)."""
        try:
            return self.http.call("GET", f"/v1/jobs/{job_id}/rejects", "reading the rejected rows").text
        except NotFoundError:
            if int(self.job(job_id).get("rows_rejected") or 0) == 0:  # the job exists and rejected nothing
                return ""
            raise

    def upload(
        self,
        src: Source | Path | str,
        progress: Progress | None = None,
        *,
        rate: int | None = None,
        attempts: int = 5,
        reopen: bool = True,
    ) -> Sent:
        """Send ``src`` (a path, or a :class:`Source`), resuming an earlier interrupted upload of the same
        content; ``rate`` caps the bytes a second. Raises BadRequestError when the server refuses the file
        (its constraints: status 413/415/422, code ``too_many_files``...)."""
        if not isinstance(src, Source):
            src = whole(Path(src)).with_checksum()
        elif not src.sha256:
            src = src.with_checksum()
        t0 = time.monotonic()
        resp: requests.Response | None = self.http.call(
            "POST",
            "/v1/uploads",
            f"opening the upload of {src.name}",
            json={"name": src.name, "size": src.size, "sha256": src.sha256},
        )
        data = resp.json()  # type: ignore[union-attr]
        if data.get("status") == "duplicate":
            return Sent("duplicate", data["job_id"])
        upload_id, offset = data["upload_id"], int(data["offset"])
        resumed_from = offset
        if progress and offset:
            progress(offset)
        breaks = 0  # connections that broke off: at most ``attempts``
        waited = 0.0  # seconds spent waiting on "not now" answers
        busy_since: float | None = None  # another client has been writing this upload since then
        while True:
            body = _Body(src, offset, progress, rate)
            try:
                resp = self.http.session.patch(
                    f"{self.http.base}/v1/uploads/{upload_id}",
                    data=body,
                    headers={"Upload-Offset": str(offset), "Content-Type": "application/octet-stream"},
                    timeout=(self.http.timeout, 3600),
                )
            except (requests.ConnectionError, requests.Timeout):
                if src.changed():
                    raise SourceChangedError(
                        f"{src.path.name} changed while being sent",
                        code="source_changed",
                        hint="send it again once it is complete",
                    ) from None
                breaks += 1
                if breaks >= attempts:
                    raise TransportError(
                        f"the upload of {src.name} kept breaking off",
                        code="upload_broke_off",
                        hint="send it again: it resumes where it stopped",
                    ) from None
                time.sleep(backoff(breaks - 1))
                resp = None
            pause = pause_for(resp, waited) if resp is not None else None
            if pause is not None:  # "not now": ask again from the offset the server has
                time.sleep(pause)
                waited += pause
                resp = None
            if resp is not None and resp.status_code not in (404, 409):
                if resp.status_code >= 400:
                    raise error_for(resp, f"uploading {src.name}")
                data = resp.json()
                if data.get("status") == "duplicate":
                    return Sent("duplicate", data["job_id"], resumed_from, time.monotonic() - t0)
                if data.get("status") == "staged":
                    return Sent("staged", data["job"]["job_id"], resumed_from, time.monotonic() - t0)
                offset = int(data["offset"])
                continue
            # the connection broke, or our idea of the offset was wrong (409), or the session is gone (404)
            known = None if resp is not None and resp.status_code == 404 else self._offset(upload_id)
            if known is None:  # completed by another client, or expired: open it again
                if reopen:
                    return self.upload(src, progress, rate=rate, attempts=attempts, reopen=False)
                raise MysimbdpError(
                    f"the upload of {src.name} was ended on the server", code="upload_ended", hint="send it again"
                )
            if resp is not None and resp.status_code == 409 and error_code(resp) == "upload_busy":
                # another client is sending this very file: wait while it gets on, then take what it left
                if known != offset or busy_since is None:
                    busy_since = time.monotonic()
                elif time.monotonic() - busy_since > BUSY_PATIENCE:
                    raise MysimbdpError(
                        f"another client has been holding the upload of {src.name} without progress",
                        code="upload_busy",
                        hint="send it again later",
                    )
                time.sleep(0.5)
            offset = known
            if progress:
                progress(offset)

    def _offset(self, upload_id: str) -> int | None:
        """How much of the upload the server has; None if the session no longer exists."""
        resp = self.http.call("HEAD", f"/v1/uploads/{upload_id}", "asking how much arrived", allow=(404,))
        return None if resp.status_code == 404 else int(resp.headers["Upload-Offset"])
