"""Every error mysimbdp raises on purpose.

Library code raises these; only entry points (the CLIs, the HTTP layer) turn them into an exit status or
an HTTP response. Two families are kept apart on purpose, because the platform reacts to them differently:

* :class:`ServiceError` - a part of the platform is down or misconfigured (Cassandra unreachable, the
  Docker engine not running). Work is retried later, never blamed on the tenant.
* :class:`TenantError` - the tenant's input is wrong (bad name, bad constraints, a file that breaks a
  constraint, an app that crashes). Reported to the tenant with a clear message, never retried as is.
"""

from __future__ import annotations

import sys
from typing import Callable


class MysimbdpError(Exception):
    """Root of every error raised on purpose by mysimbdp.

    ``exit_code`` is what a command-line entry point exits with; ``http_status`` what an API answers, and
    ``code`` the machine-readable name of the error in the API's JSON answer (clients match on it, never on
    the message). ``retry_after``, when set, becomes an HTTP Retry-After header (seconds).
    """

    exit_code = 1
    http_status = 500
    code = "error"

    def __init__(
        self, message: str, *, hint: str | None = None, code: str | None = None, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if code is not None:
            self.code = code
        self.retry_after = retry_after

    def one_line(self) -> str:
        """The message and, when there is one, what to do about it, on one line."""
        return f"{self.message} ({self.hint})" if self.hint else self.message


# --- configuration and platform services -------------------------------------------------------------


class ConfigError(MysimbdpError):
    """The platform's configuration (file, environment, flags) is invalid."""

    exit_code = 78  # EX_CONFIG
    code = "config_error"


class ServiceError(MysimbdpError):
    """A platform service (Cassandra, Mosquitto, Docker, a manager) is unavailable or failed."""

    exit_code = 69  # EX_UNAVAILABLE
    http_status = 503
    code = "service_unavailable"


class ServiceStartError(ServiceError):
    """A service could not be installed or started; the message says which and why."""


class CassandraUnavailable(ServiceError):
    """Cassandra cannot be reached or refused the operator's login."""

    code = "database_unavailable"


class BrokerUnavailable(ServiceError):
    """The MQTT broker cannot be reached."""

    code = "broker_unavailable"


class RuntimeUnavailable(ServiceError):
    """The container runtime (Docker engine) cannot be reached or failed to run a container."""

    code = "sandbox_unavailable"


# --- input from tenants and operators ----------------------------------------------------------------


class TenantError(MysimbdpError):
    """Something the tenant (or the operator acting for one) supplied is wrong."""

    exit_code = 65  # EX_DATAERR
    http_status = 400
    code = "bad_request"


class UsageError(TenantError):
    """A command was called wrongly (a missing argument, a folder that is not there)."""

    exit_code = 2
    code = "usage"


class InvalidName(TenantError):
    """An identifier (tenant, table, file name) does not match its strict pattern."""

    code = "invalid_name"


class InvalidConstraints(TenantError):
    """A constraints file is not valid JSON or breaks the schema in constraints/."""

    code = "invalid_constraints"


class TenantExists(TenantError):
    """A tenant with this name already exists (and is complete)."""

    exit_code = 73
    http_status = 409
    code = "tenant_exists"


class TenantNotFound(TenantError):
    """No tenant with this name."""

    exit_code = 67
    http_status = 404
    code = "no_such_tenant"


class NotFound(TenantError):
    """The thing asked for (a job, an upload, an instance) does not exist for this tenant."""

    http_status = 404
    code = "not_found"


class AuthenticationFailed(TenantError):
    """Wrong user name or password."""

    exit_code = 77
    http_status = 401
    code = "unauthorized"


class TooManyAttempts(AuthenticationFailed):
    """Too many failed logins from this client or for this user; locked out for a while."""

    http_status = 429
    code = "too_many_attempts"


class TooManyRequests(TenantError):
    """The tenant (or the client's address) already has as many requests in progress as it may."""

    http_status = 429
    code = "too_many_requests"


class BodyTooLarge(TenantError):
    """A request body is larger than the API reads for that request."""

    http_status = 413
    code = "body_too_large"


class RequestTimeout(TenantError):
    """A request body did not arrive in time."""

    http_status = 408
    code = "request_timeout"


class ConstraintViolation(TenantError):
    """A file breaks one of the tenant's constraints (format, size, number of files)."""

    http_status = 422
    code = "constraint_violation"


class FileTooLarge(ConstraintViolation):
    """A file is larger than the tenant's maximum file size."""

    http_status = 413
    code = "file_too_large"


class TooManyFiles(ConstraintViolation):
    """The tenant already has as many files as its constraints allow."""

    http_status = 429
    code = "too_many_files"


class Conflict(TenantError):
    """The request conflicts with the current state (an upload offset that does not match, a duplicate)."""

    http_status = 409
    code = "conflict"


class NoApp(TenantError):
    """The tenant has no app of the kind asked for (batch or stream)."""

    http_status = 409
    code = "no_app"


class AppRefused(TenantError):
    """A tenant app failed its checks before it was installed (mysimbdp/appchecks.py): its manifest or
    sample, a Python file that does not compile, an entry point its runtime cannot start (a jar that is not a
    jar, a dynamically linked executable), or its dry run (a crash, the time limit, a result that is not
    valid). Nothing was installed; ``report`` is what the checks found, the dry run's log included."""

    http_status = 422
    code = "app_refused"
    report: object = None


# --- backups ---------------------------------------------------------------------------------------------


class BackupNotFound(NotFound):
    """No backup of that name in the backup folder (or no backup at that path)."""

    exit_code = 66  # EX_NOINPUT
    code = "no_such_backup"


class CorruptBackup(TenantError):
    """A backup whose files do not match its manifest: one missing, one extra, a size or a checksum that
    differs. The message names the file; nothing is restored from it."""

    code = "corrupt_backup"


class RestoreConflict(Conflict):
    """A restore would overwrite rows the tenant has now (refused unless asked with --overwrite)."""

    exit_code = 73
    code = "restore_conflict"


# --- replays and the dashboard ----------------------------------------------------------------------------


class ReplayRefused(Conflict):
    """A replay that cannot be done: the job is not ``failed``, its file is no longer in the quarantine (it
    was replayed already), or another replay of it is under way. Nothing was staged."""

    code = "replay_refused"


class SessionExpired(AuthenticationFailed):
    """A dashboard request without a valid session: none, expired, forged, or its tenant was deleted (or its
    password changed) since the login. Pages go back to the login form; JSON calls get 401."""

    code = "session_expired"


class CsrfRefused(TenantError):
    """A dashboard POST without the session's token, or from a page of another origin."""

    http_status = 403
    code = "csrf_refused"


# --- the query API -------------------------------------------------------------------------------------


class BadQuery(TenantError):
    """A query, write or export request that cannot be run as asked (the message says what to change)."""

    code = "bad_query"


class BadValue(BadQuery):
    """A value that does not fit its column's type ("abc" for an int, a date that is not ISO 8601)."""

    code = "bad_value"


class NeedsIndex(BadQuery):
    """A filter Cassandra could only answer by reading the whole table; the hint names the index to create."""

    code = "needs_index"


class BadPageToken(BadQuery):
    """A page or resume token that was forged, cut, expired, or made for another query or tenant."""

    code = "bad_page_token"


class Forbidden(TenantError):
    """Cassandra refused the tenant's own role (it tried something outside its keyspace's rights)."""

    http_status = 403
    code = "forbidden"


class RangeNotSatisfiable(TenantError):
    """An HTTP Range outside the object."""

    http_status = 416
    code = "range_not_satisfiable"


class ChecksumMismatch(TenantError):
    """An uploaded body's sha256 is not the one the client declared."""

    http_status = 400
    code = "checksum_mismatch"


class LengthRequired(TenantError):
    """A body whose size must be known first came without a Content-Length."""

    http_status = 411
    code = "length_required"


class QuotaExceeded(TenantError):
    """An object over the tenant's size limit, or past its total quota or object count."""

    http_status = 413
    code = "quota_exceeded"


def exit_status(prog: str, call: Callable[[], int], *, interrupted: str = "interrupted") -> int:
    """Run a console script's work: a MysimbdpError becomes one line on stderr and its exit code, ^C 130."""
    try:
        return call()
    except MysimbdpError as exc:
        print(f"{prog}: error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"\n{prog}: {interrupted}", file=sys.stderr)
        return 130
