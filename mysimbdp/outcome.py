"""How the platform judges what one run of a tenant's app left behind: the one home of these rules, used by
the batch manager for real jobs (batchingestmanager/runner.py), by the stream controller for instances'
reports (streamingestmanager/controller.py) and by the dry run of a new app (mysimbdp/dryrun.py).

A batch run: its exit status and limits (:func:`run_failure`), then each file's ``result.json``
(:func:`read_result`, :func:`judge`). A stream instance: its timing reports (:func:`parse_report`). Every
read of what the app wrote is bounded (mysimbdp/bounded.py): it is tenant code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import bounded
from .errors import TenantError
from .jobs import JobStatus
from .sandbox import RunResult

EXIT_TEMPORARY = 75
MAX_RESULT_BYTES = 64 * 1024
MAX_RESULT_DEPTH = 8
MAX_COUNT = 10**15  # rows in one file: anything above is not a count but a tenant app's mistake
SHARED = "its run with other files failed, so it runs again alone"
APP_SAYS = "the app could not ingest the file: "


@dataclass
class Verdict:
    status: JobStatus  # succeeded | retrying | failed
    reason: str = ""
    rows: int | None = None
    rejected: int | None = None
    seconds: float | None = None


# --- a batch run -------------------------------------------------------------------------------------------


def run_failure(r: RunResult, *, stopping: bool, cassandra_ok: Callable[[], bool]) -> Verdict | None:
    """What went wrong with the run as a whole (None: the app exited normally). ``stopping``: the platform
    itself stopped the run; ``cassandra_ok`` is asked only when the run failed."""
    if stopping and not r.ok:  # stopped by the manager's own stop: not the app's doing
        return Verdict(JobStatus.RETRYING, "the batch manager was stopped while the app ran")
    if r.exit_code == EXIT_TEMPORARY and not (r.timed_out or r.oom_killed or r.output_exceeded):
        return Verdict(JobStatus.RETRYING, "the app reported the infrastructure unavailable (exit 75)")
    if not r.ok and not cassandra_ok():
        return Verdict(JobStatus.RETRYING, f"the app {r.describe()} while Cassandra was unreachable")
    if not r.ok:
        tail = r.last_error or bounded.last_line(r.log_path)
        return Verdict(JobStatus.FAILED, f"the app {r.describe()}" + (f": {tail}" if tail else ""))
    return None


def judge(out: Path, r: RunResult, failure: Verdict | None, *, shared: bool) -> Verdict:
    """One file's verdict, from its result and the run's outcome. When a run of several files failed, a
    file whose result says it was ingested (or says why it could not be) keeps that verdict, and the
    others run again alone; past the output limit, no result of the run counts."""
    if failure is None:
        own = read_result(out)
        return own or Verdict(JobStatus.FAILED, "the app exited normally but wrote no /output/result.json")
    if shared and not r.output_exceeded:
        own = read_result(out)
        if own is not None and (own.status == JobStatus.SUCCEEDED or own.reason.startswith(APP_SAYS)):
            return own
    if failure.status == JobStatus.RETRYING and not r.output_exceeded:
        own = read_result(out)  # Cassandra went away after this file was done
        if own is not None and own.status == JobStatus.SUCCEEDED:
            return own
    if failure.status == JobStatus.FAILED and shared:
        return Verdict(JobStatus.RETRYING, f"{SHARED}: {failure.reason}")
    return failure


def read_result(out: Path) -> Verdict | None:
    """The verdict a file's result.json gives (None when there is none)."""
    try:
        data = bounded.loads_json(
            bounded.read_regular(out / "result.json", MAX_RESULT_BYTES),
            max_bytes=MAX_RESULT_BYTES,
            max_depth=MAX_RESULT_DEPTH,
        )
        if not isinstance(data, dict):
            raise ValueError("it is not a JSON object")
        if data.get("error"):
            return Verdict(JobStatus.FAILED, APP_SAYS + bounded.printable(str(data["error"])))
        missing = [k for k in ("rows_ingested", "rows_rejected") if k not in data]
        if missing:
            raise ValueError(f"it lacks {' and '.join(missing)}")
        rows, rejected = data["rows_ingested"], data["rows_rejected"]
        if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_COUNT for v in (rows, rejected)):
            raise ValueError("rows_ingested and rows_rejected must be whole numbers from 0 to 10^15")
        seconds = data.get("seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds < 1e7:
            seconds = None
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)  # no host paths
        return Verdict(JobStatus.FAILED, f"the app exited normally but its /output/result.json is not valid: {why}")
    return Verdict(JobStatus.SUCCEEDED, "", rows, rejected, seconds)


# --- a stream instance's reports ---------------------------------------------------------------------------

MAX_REPORT_BYTES = 8192
REPORT_FIELDS = (
    "window_start",
    "window_end",
    "messages",
    "bytes",
    "avg_ms",
    "p95_ms",
    "errors",
    "rejected",
    "pending",
    "started_at",
    "first_message_at",
)
# what each field may be: tenant code writes the reports, and the autoscaler and the keyspace read them
_TIMES = (1e9, 1e10)  # Unix seconds, 2001 to 2286
_LIMITS = {
    "window_start": _TIMES,
    "window_end": _TIMES,
    "started_at": _TIMES,
    "first_message_at": _TIMES,
    "messages": (0, 1e12),
    "bytes": (0, 1e15),
    "errors": (0, 1e12),
    "rejected": (0, 1e12),
    "pending": (0, 1e12),
    "avg_ms": (0, 1e7),
    "p95_ms": (0, 1e7),
}
_COUNTS = ("messages", "bytes", "errors", "rejected", "pending")


def parse_report(tenant: str, instance: str, payload: bytes) -> dict:
    """A report from an instance, checked (it comes from tenant code: trust nothing in it)."""
    try:
        data = bounded.loads_json(payload, max_bytes=MAX_REPORT_BYTES, max_depth=2)
    except ValueError as exc:
        raise TenantError(f"a report must be a small JSON object: {exc}") from None
    if not isinstance(data, dict) or data.get("tenant") != tenant or data.get("instance") != instance:
        raise TenantError("report does not match its topic")
    out = {"tenant": tenant, "instance": instance}
    for key in REPORT_FIELDS:
        value = data.get(key)
        if value is None and key == "first_message_at":
            out[key] = None
            continue
        low, high = _LIMITS[key]
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (isinstance(value, float) and not math.isfinite(value))
            or not low <= value <= high  # exact for an int of any size (math.isfinite(10**400) overflows)
        ):
            raise TenantError(f"report field {key} is not a number from {low:g} to {high:g}")
        out[key] = int(value) if key in _COUNTS else value
    if out["window_end"] < out["window_start"]:
        raise TenantError("report window ends before it starts")
    return out
