"""Every error the client raises, under one root.

The platform's APIs answer an error as ``{"error": message, "code": code, "hint": ...}`` with an HTTP
status; the client raises it as one of these, keeping all four. Match on the class or on ``code`` (stable,
machine-readable), never on the message. Two families are kept apart as the platform keeps them: "the
platform cannot serve you now" (:class:`UnavailableError`, :class:`TransportError`: try again later)
and "what you sent is wrong" (:class:`BadRequestError` and its kin: sending it again will not help).
"""

from __future__ import annotations


class MysimbdpError(Exception):
    """Root of every error of the client.

    ``status`` is the HTTP status (None when no answer came, or the error is local), ``code`` the API's
    machine-readable name of the error, ``hint`` what to do about it, ``retry_after`` the seconds the
    server asked to wait, and ``action`` what the client was doing ("uploading a.csv")."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str = "error",
        hint: str | None = None,
        retry_after: float | None = None,
        action: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.hint = hint
        self.retry_after = retry_after
        self.action = action

    def one_line(self) -> str:
        """What went wrong (and while doing what) and, when known, what to do about it, on one line."""
        text = f"{self.action}: {self.message}" if self.action else self.message
        return f"{text} ({self.hint})" if self.hint else text

    def __str__(self) -> str:
        return self.one_line()


class AuthenticationError(MysimbdpError):
    """Wrong user name or password (401), or locked out after too many failed logins (429,
    code ``too_many_attempts``; ``retry_after`` says for how long)."""


class NotFoundError(MysimbdpError):
    """The table, row, object, job or upload asked for does not exist for this tenant (404)."""


class BadRequestError(MysimbdpError):
    """The request cannot be served as sent (a 4xx other than the ones above): a filter that needs an index
    (``needs_index``), a value of the wrong type (``bad_value``), a page token for another query
    (``bad_page_token``), a file the constraints refuse. The message says what to change."""


class QuotaExceededError(BadRequestError):
    """An object over the tenant's size limit, or past its total quota or object count (``quota_exceeded``)."""


class UnavailableError(MysimbdpError):
    """The platform answered but cannot serve the request now (503: Cassandra or a manager down, an index
    still being built); ``retry_after`` says when to try again. Also any other 5xx answer."""


class TransportError(MysimbdpError):
    """No answer: the connection was refused, broke off, or timed out (the broker included)."""


class SourceChangedError(MysimbdpError):
    """A local file changed while it was being sent: what was checksummed is not what would arrive."""


class GaveUp(MysimbdpError):
    """The publisher heard no confirmation for its outage bound (broker or platform away): what was
    confirmed so far is safe (``Publisher.mark``); publish the rest later, e.g. from a checkpoint."""


class CheckpointError(MysimbdpError):
    """A publisher's checkpoint is missing, damaged, or for another file content or stream."""
