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

    ``exit_code`` is what a command-line entry point exits with; ``http_status`` what an API answers.
    """

    exit_code = 1
    http_status = 500

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        """The message and, when there is one, what to do about it, on one line."""
        return f"{self.message} ({self.hint})" if self.hint else self.message


# --- configuration and platform services -------------------------------------------------------------


class ConfigError(MysimbdpError):
    """The platform's configuration (file, environment, flags) is invalid."""

    exit_code = 78  # EX_CONFIG


class ServiceError(MysimbdpError):
    """A platform service (Cassandra, Mosquitto, Docker, a manager) is unavailable or failed."""

    exit_code = 69  # EX_UNAVAILABLE
    http_status = 503


class ServiceStartError(ServiceError):
    """A service could not be installed or started; the message says which and why."""


class CassandraUnavailable(ServiceError):
    """Cassandra cannot be reached or refused the operator's login."""


class BrokerUnavailable(ServiceError):
    """The MQTT broker cannot be reached."""


class RuntimeUnavailable(ServiceError):
    """The container runtime (Docker engine) cannot be reached or failed to run a container."""


# --- input from tenants and operators ----------------------------------------------------------------


class TenantError(MysimbdpError):
    """Something the tenant (or the operator acting for one) supplied is wrong."""

    exit_code = 65  # EX_DATAERR
    http_status = 400


class UsageError(TenantError):
    """A command was called wrongly (a missing argument, a folder that is not there)."""

    exit_code = 2


class InvalidName(TenantError):
    """An identifier (tenant, table, file name) does not match its strict pattern."""


class InvalidConstraints(TenantError):
    """A constraints file is not valid JSON or breaks the schema in constraints/."""


class TenantExists(TenantError):
    """A tenant with this name already exists (and is complete)."""

    exit_code = 73
    http_status = 409


class TenantNotFound(TenantError):
    """No tenant with this name."""

    exit_code = 67
    http_status = 404


class NotFound(TenantError):
    """The thing asked for (a job, an upload, an instance) does not exist for this tenant."""

    http_status = 404


class AuthenticationFailed(TenantError):
    """Wrong user name or password."""

    exit_code = 77
    http_status = 401


class TooManyAttempts(AuthenticationFailed):
    """Too many failed logins from this client or for this user; locked out for a while."""

    http_status = 429

    def __init__(self, message: str, *, retry_after: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.retry_after = retry_after


class ConstraintViolation(TenantError):
    """A file breaks one of the tenant's constraints (format, size, number of files)."""

    http_status = 422


class FileTooLarge(ConstraintViolation):
    """A file is larger than the tenant's maximum file size."""

    http_status = 413


class TooManyFiles(ConstraintViolation):
    """The tenant already has as many files as its constraints allow."""

    http_status = 429


class Conflict(TenantError):
    """The request conflicts with the current state (an upload offset that does not match, a duplicate)."""

    http_status = 409


class NoApp(TenantError):
    """The tenant has no app of the kind asked for (batch or stream)."""

    http_status = 409


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
