"""The upload API, client side: constraints, resumable uploads, receipts."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import requests
from requests.adapters import HTTPAdapter

from mysimbdp.retry import backoff
from mysimbdp.errors import (
    AuthenticationFailed,
    ConstraintViolation,
    MysimbdpError,
    ServiceError,
    TenantError,
    TooManyAttempts,
    TooManyFiles,
)

from .sources import Source

Progress = Callable[[int], None]  # called with the number of bytes of the file sent so far
BLOCK = 1 << 20  # bytes read from the file and written to the socket at a time
BUSY_PATIENCE = 120  # seconds to wait for another client's upload of the same file that makes no progress
PATIENCE = 60  # seconds to keep asking while the server answers "not now" (codes below), then give up
WAIT_FOR = ("too_many_requests", "too_many_connections", "login_busy", "batch_manager_down")


class ServerUnreachable(ServiceError):
    """The upload API does not answer."""


class SourceChanged(TenantError):
    """The local file changed after it was checked: what was checked is not what would be sent."""


@dataclass
class Sent:
    status: str  # staged | duplicate
    job_id: str
    resumed_from: int = 0
    seconds: float = 0.0


def error_code(resp: requests.Response) -> str:
    """The machine-readable ``code`` of an error answer ("" when there is none)."""
    try:
        body = resp.json()
    except ValueError:
        return ""
    return str(body.get("code") or "") if isinstance(body, dict) else ""


def _raise_for(resp: requests.Response, what: str) -> None:
    if resp.status_code < 400:
        return
    try:
        body = resp.json()
        message, hint, code = body.get("error") or resp.reason, body.get("hint"), str(body.get("code") or "")
    except (ValueError, AttributeError):
        message, hint, code = f"{resp.status_code} {resp.reason}", None, ""
    retry_after = int(resp.headers["Retry-After"]) if resp.headers.get("Retry-After", "").isdigit() else None
    if resp.status_code == 401:
        raise AuthenticationFailed("wrong user name or password", hint="check -u/-p")
    if code == "too_many_attempts":
        raise TooManyAttempts(message, retry_after=retry_after, hint=hint)
    if code == "too_many_files":
        raise TooManyFiles(message, hint=hint)
    if resp.status_code in (413, 415, 422):
        raise ConstraintViolation(message, hint=hint, code=code or None)
    if resp.status_code >= 500:
        raise ServiceError(
            f"{what}: the server answered {resp.status_code}: {message}", hint=hint, retry_after=retry_after
        )
    raise TenantError(f"{what}: {message}", hint=hint, code=code or None)


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


class _BigBlocks(HTTPAdapter):
    """Bodies sent 1 MiB per write rather than urllib3's 16 KiB: a Python loop of small writes,
    not the network, otherwise limits an upload on a fast link (see bench/RESULTS.md)."""

    def init_poolmanager(self, *args, **kwargs) -> None:
        kwargs["blocksize"] = BLOCK
        super().init_poolmanager(*args, **kwargs)


class Client:
    def __init__(
        self, server: str, user: str, password: str, *, timeout: float = 30.0, rate: int | None = None
    ) -> None:
        self.base = server.rstrip("/")
        self.http = requests.Session()
        self.http.mount("http://", _BigBlocks())
        self.http.mount("https://", _BigBlocks())
        self.http.auth = (user, password)
        self.timeout = timeout
        self.rate = rate

    def _call(self, method: str, path: str, what: str, *, allow: tuple[int, ...] = (), **kw) -> requests.Response:
        timeout = kw.pop("timeout", self.timeout)
        waited = 0.0
        while True:
            try:
                resp = self.http.request(method, self.base + path, timeout=timeout, **kw)
            except requests.ConnectionError as exc:
                raise ServerUnreachable(
                    f"cannot reach the platform at {self.base}", hint="is it running? check --server"
                ) from exc
            except requests.Timeout as exc:
                raise ServerUnreachable(f"the platform at {self.base} did not answer in time") from exc
            pause = self._pause(resp, waited)
            if pause is None:
                break
            time.sleep(pause)
            waited += pause
        if resp.status_code not in allow:
            _raise_for(resp, what)
        return resp

    @staticmethod
    def _pause(resp: requests.Response, waited: float) -> float | None:
        """How long to wait before asking again when the server says "not now" (busy, or the batch manager is
        restarting), or None to take the answer as it is."""
        if resp.status_code not in (429, 503) or error_code(resp) not in WAIT_FOR or waited >= PATIENCE:
            return None
        after = resp.headers.get("Retry-After", "1")
        return min(float(after) if after.isdigit() else 1.0, 10.0, PATIENCE - waited)

    def constraints(self) -> dict:
        return self._call("GET", "/v1/constraints", "reading the constraints").json()

    def job(self, job_id: str) -> dict:
        return self._call("GET", f"/v1/jobs/{job_id}", "reading a receipt").json()

    def upload(self, src: Source, progress: Progress | None = None, attempts: int = 5, reopen: bool = True) -> Sent:
        """Send ``src`` (resuming an earlier interrupted upload of the same content)."""
        t0 = time.monotonic()
        resp = self._call(
            "POST",
            "/v1/uploads",
            f"opening the upload of {src.name}",
            json={"name": src.name, "size": src.size, "sha256": src.sha256},
        )
        data = resp.json()
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
            body = _Body(src, offset, progress, self.rate)
            try:
                resp = self.http.patch(
                    f"{self.base}/v1/uploads/{upload_id}",
                    data=body,
                    headers={"Upload-Offset": str(offset), "Content-Type": "application/octet-stream"},
                    timeout=(self.timeout, 3600),
                )
            except (requests.ConnectionError, requests.Timeout):
                if src.changed():
                    raise SourceChanged(
                        f"{src.path.name} changed while being sent", hint="send it again once it is complete"
                    ) from None
                breaks += 1
                if breaks >= attempts:
                    raise ServerUnreachable(
                        f"the upload of {src.name} kept breaking off",
                        hint="run fetchdata again: it resumes where it stopped",
                    ) from None
                time.sleep(backoff(breaks - 1))
                resp = None
            pause = self._pause(resp, waited) if resp is not None else None
            if pause is not None:  # "not now": ask again from the offset the server has
                time.sleep(pause)
                waited += pause
                resp = None
            if resp is not None and resp.status_code not in (404, 409):
                _raise_for(resp, f"uploading {src.name}")
                data = resp.json()
                if data.get("status") == "duplicate":
                    return Sent("duplicate", data["job_id"], resumed_from, time.monotonic() - t0)
                if data.get("status") == "staged":
                    return Sent("staged", data["job"]["job_id"], resumed_from, time.monotonic() - t0)
                offset = int(data["offset"])
                continue
            # the connection broke, or our idea of the offset was wrong (409), or the session is gone (404)
            known = None if resp is not None and resp.status_code == 404 else self._offset(upload_id)
            if known is None:  # completed by another run of fetchdata, or expired: open it again
                if reopen:
                    return self.upload(src, progress, attempts, reopen=False)
                raise MysimbdpError(f"the upload of {src.name} was ended on the server", hint="run fetchdata again")
            if resp is not None and resp.status_code == 409 and error_code(resp) == "upload_busy":
                # another fetchdata is sending this very file: wait while it gets on, then take what it left
                if known != offset or busy_since is None:
                    busy_since = time.monotonic()
                elif time.monotonic() - busy_since > BUSY_PATIENCE:
                    raise MysimbdpError(
                        f"another client has been holding the upload of {src.name} without progress",
                        hint="run fetchdata again later",
                    )
                time.sleep(0.5)
            offset = known
            if progress:
                progress(offset)

    def _offset(self, upload_id: str) -> int | None:
        """How much of the upload the server has; None if the session no longer exists."""
        resp = self._call("HEAD", f"/v1/uploads/{upload_id}", "asking how much arrived", allow=(404,))
        return None if resp.status_code == 404 else int(resp.headers["Upload-Offset"])
