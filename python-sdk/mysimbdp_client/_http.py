"""One HTTP transport for the platform's three APIs (uploads, stream, query): Basic auth, bounded waits
on "not now" answers, and every error answer turned into the typed error of :mod:`.errors`."""

from __future__ import annotations

import time

import requests
from requests.adapters import HTTPAdapter

from .errors import (
    AuthenticationError,
    BadRequestError,
    MysimbdpError,
    NotFoundError,
    QuotaExceededError,
    TransportError,
    UnavailableError,
)

BLOCK = 1 << 20  # bytes a request body is written to the socket at a time
PATIENCE = 60.0  # seconds to keep asking while the server answers "not now" (codes below), then give up
WAIT_FOR = ("too_many_requests", "too_many_connections", "login_busy", "batch_manager_down")
#: also waited out by reads (asking again changes nothing): the database away, an index still being built
UNAVAILABLE = ("service_unavailable", "database_unavailable")


class BigBlocks(HTTPAdapter):
    """Bodies sent 1 MiB per write rather than urllib3's 16 KiB: a Python loop of small writes, not the
    network, otherwise limits an upload on a fast link (see bench/RESULTS.md)."""

    def init_poolmanager(self, *args, **kwargs) -> None:
        kwargs["blocksize"] = BLOCK
        super().init_poolmanager(*args, **kwargs)


def error_code(resp: requests.Response) -> str:
    """The machine-readable ``code`` of an error answer ("" when there is none)."""
    try:
        body = resp.json()
    except ValueError:
        return ""
    return str(body.get("code") or "") if isinstance(body, dict) else ""


def retry_after(resp: requests.Response) -> int | None:
    value = resp.headers.get("Retry-After", "")
    return int(value) if value.isdigit() else None


def error_for(resp: requests.Response, action: str | None = None) -> MysimbdpError:
    """The typed error for an error answer (status >= 400)."""
    try:
        body = resp.json()
        message, hint, code = body.get("error") or resp.reason, body.get("hint"), str(body.get("code") or "")
    except (ValueError, AttributeError):
        message, hint, code = f"{resp.status_code} {resp.reason}", None, ""
    kw = dict(status=resp.status_code, code=code or "error", hint=hint, retry_after=retry_after(resp), action=action)
    status = resp.status_code
    if status == 401 or code == "too_many_attempts":
        return AuthenticationError(str(message), **kw)
    if status == 404:
        return NotFoundError(str(message), **kw)
    if code == "quota_exceeded":
        return QuotaExceededError(str(message), **kw)
    if status >= 500:
        return UnavailableError(str(message), **kw)
    return BadRequestError(str(message), **kw)


class Http:
    """Requests to one API (``base``) as one tenant, on one pooled session."""

    def __init__(self, base: str, auth: tuple[str, str], *, timeout: float = 30.0) -> None:
        self.base = base.rstrip("/")
        self.session = requests.Session()
        self.session.mount("http://", BigBlocks())
        self.session.mount("https://", BigBlocks())
        self.session.auth = auth
        self.timeout = timeout

    def send(self, method: str, path: str, **kw) -> requests.Response:
        """One request; TransportError when no answer comes (the answer is returned whatever its status)."""
        kw.setdefault("timeout", self.timeout)
        try:
            return self.session.request(method, self.base + path, **kw)
        except requests.Timeout as exc:
            raise TransportError(f"the platform at {self.base} did not answer in time") from exc
        except requests.ConnectionError as exc:
            raise TransportError(f"cannot reach the platform at {self.base}", hint="is it running?") from exc

    def call(
        self,
        method: str,
        path: str,
        action: str | None = None,
        *,
        allow: tuple[int, ...] = (),
        retry: str = "busy",
        **kw,
    ) -> requests.Response:
        """A request, asked again while the server says "not now" (at most PATIENCE seconds); the typed
        error for an error answer unless its status is in ``allow``. ``retry``: "busy" (the server's busy
        answers), "reads" (those, and a database that is away: for requests that change nothing), or
        "none" (a body streamed from a file cannot be sent twice)."""
        codes = {"busy": WAIT_FOR, "reads": WAIT_FOR + UNAVAILABLE, "none": ()}[retry]
        waited = 0.0
        while True:
            try:
                resp = self.send(method, path, **kw)
            except TransportError as exc:
                # a kept-alive connection the server closed just as this request went out: sent again once
                # on a new connection (not a body streamed from a file: it cannot be read twice)
                aborted = "Connection aborted" in str(exc.__cause__ or "")
                if not aborted or retry == "none":
                    raise
                resp = self.send(method, path, **kw)
            pause = pause_for(resp, waited, codes)
            if pause is None:
                break
            resp.close()
            time.sleep(pause)
            waited += pause
        if resp.status_code >= 400 and resp.status_code not in allow:
            raise error_for(resp, action)
        return resp

    def data(self, method: str, path: str, action: str | None = None, **kw):
        """The ``data`` of a query API answer (``{"data": ...}``)."""
        return self.call(method, path, action, **kw).json()["data"]

    def close(self) -> None:
        self.session.close()


def pause_for(resp: requests.Response, waited: float, codes: tuple[str, ...] = WAIT_FOR) -> float | None:
    """How long to wait before asking again when the server says "not now" (busy, or the batch manager
    restarting), or None to take the answer as it is."""
    if resp.status_code not in (429, 503) or error_code(resp) not in codes or waited >= PATIENCE:
        return None
    after = resp.headers.get("Retry-After", "1")
    return min(float(after) if after.isdigit() else 1.0, 10.0, PATIENCE - waited)
