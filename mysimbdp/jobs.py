"""Job records: the receipt of every file, in the platform keyspace and in the ingestion log.

A job is created when an upload is complete and verified (status ``staged``), then moves through
``running`` (and ``retrying`` after an infrastructure failure) to ``succeeded`` or ``failed``. Jobs live
in one partition per tenant and month (``bucket``), newest first; the month comes from the job id's time,
so a job can always be found from its tenant and id.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import asdict, dataclass, fields
from enum import StrEnum
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

from cassandra.cluster import Session
from cassandra.util import datetime_from_uuid1, min_uuid_from_time

from . import names
from .config import Config
from .errors import NotFound, TenantError

log = logging.getLogger(__name__)


class JobStatus(StrEnum):
    """Where a job is. ``staged`` -> ``running`` (-> ``retrying`` -> ``running`` ...) -> ``succeeded`` or
    ``failed``; the last two are final."""

    STAGED = "staged"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def final(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED)

    @classmethod
    def parse(cls, text: str) -> "JobStatus":
        """The status named ``text``; TenantError (with the choices) for anything else."""
        try:
            return cls(text)
        except ValueError:
            raise TenantError(f"unknown status {text[:40]!r}", hint=", ".join(s.value for s in cls)) from None


def new_job_id() -> uuid.UUID:
    return uuid.uuid1()


def bucket_of(job_id: uuid.UUID) -> str:
    return datetime_from_uuid1(job_id).strftime("%Y-%m")


@dataclass
class Job:
    tenant: str
    job_id: uuid.UUID
    file_name: str = ""
    stored_name: str = ""
    size: int = 0
    sha256: str = ""
    client_address: str = ""
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    status: JobStatus = JobStatus.STAGED
    attempts: int = 0
    rows_ingested: int | None = None
    rows_rejected: int | None = None
    seconds: float | None = None
    app_name: str | None = None
    app_version: str | None = None
    reason: str | None = None
    log_path: str | None = None
    rejects_path: str | None = None
    replay_of: uuid.UUID | None = None  # the failed job whose file this job stages again

    def to_dict(self, *, public: bool = False) -> dict:
        d = asdict(self)
        d["job_id"] = str(self.job_id)
        d["status"] = str(self.status)
        d["replay_of"] = str(self.replay_of) if self.replay_of else None
        for k in ("created_at", "started_at", "finished_at"):
            if d[k] is not None:
                d[k] = d[k].replace(tzinfo=timezone.utc).isoformat() if d[k].tzinfo is None else d[k].isoformat()
        if public:  # tenants see that a log / rejects exist, not where they are on the server
            d["has_log"] = bool(d.pop("log_path"))
            d["has_rejects"] = bool(d.pop("rejects_path"))
        return d

    def log_line(self) -> str:
        """One line in the spirit of the first prototype's ingestion log."""
        kb = self.size / 1024
        when = (self.finished_at or datetime.now(timezone.utc)).strftime("%Y-%m-%d %H:%M:%S")
        text = (
            f"{when} - Ingestion of the file: {self.file_name} for {self.tenant} - size: {kb:.1f} KB - "
            f"{self.rows_ingested or 0} lines ingested in {self.seconds or 0:.3f} seconds - "
            f"{self.rows_rejected or 0} rejected - status: {self.status} - job {self.job_id}"
        )
        if self.status == JobStatus.FAILED and self.reason:
            text += f" - reason: {self.reason}"
        return text


_COLUMNS = [f.name for f in fields(Job) if f.name not in ("tenant", "job_id")]


class JobStore:
    def __init__(self, cfg: Config, session: Session) -> None:
        self.cfg = cfg
        self.session = session
        ks = cfg.keyspace
        cols = ", ".join(_COLUMNS)
        marks = ", ".join("?" for _ in _COLUMNS)
        self._insert = session.prepare(
            f"INSERT INTO {ks}.jobs (tenant, bucket, job_id, {cols}) VALUES (?, ?, ?, {marks})"
        )
        self._get = session.prepare(f"SELECT * FROM {ks}.jobs WHERE tenant = ? AND bucket = ? AND job_id = ?")
        self._page = session.prepare(f"SELECT * FROM {ks}.jobs WHERE tenant = ? AND bucket = ?")
        self._older = session.prepare(f"SELECT * FROM {ks}.jobs WHERE tenant = ? AND bucket = ? AND job_id < ?")
        self._since = session.prepare(f"SELECT job_id FROM {ks}.jobs WHERE tenant = ? AND bucket = ? AND job_id >= ?")
        self._seen = session.prepare(
            f"SELECT job_id, file_name FROM {ks}.files_by_checksum WHERE tenant = ? AND sha256 = ?"
        )
        self._remember = session.prepare(
            f"INSERT INTO {ks}.files_by_checksum (tenant, sha256, job_id, file_name) VALUES (?, ?, ?, ?)"
        )
        self._forget = session.prepare(f"DELETE FROM {ks}.files_by_checksum WHERE tenant = ? AND sha256 = ?")
        self._delete = session.prepare(f"DELETE FROM {ks}.jobs WHERE tenant = ? AND bucket = ? AND job_id = ?")

    def save(self, job: Job) -> None:
        values = [getattr(job, c) for c in _COLUMNS]
        self.session.execute(self._insert, [job.tenant, bucket_of(job.job_id), job.job_id, *values])

    def get(self, tenant: str, job_id: uuid.UUID | str) -> Job:
        try:
            jid = job_id if isinstance(job_id, uuid.UUID) else uuid.UUID(str(job_id))
            if jid.version != 1:
                raise ValueError
        except ValueError:
            raise NotFound(f"no job {job_id!s}") from None
        row = self.session.execute(self._get, (names.tenant(tenant), bucket_of(jid), jid)).one()
        if row is None:
            raise NotFound(f"no job {job_id!s} for tenant {tenant}")
        return _from_row(row)

    def list(
        self, tenant: str, *, status: str | None = None, limit: int = 100, since: datetime | None = None
    ) -> list[Job]:
        """The tenant's jobs, newest first, from the month of ``since`` (the tenant's creation: nothing is
        older) or the last 13 months."""
        out: list[Job] = []
        for bucket in reversed(months_since(since)):
            for row in self.session.execute(self._page, (names.tenant(tenant), bucket)):
                if status is None or row.status == status:
                    out.append(_from_row(row))
                    if len(out) >= limit:
                        return out
        return out

    def scan(self, tenant: str, *, since: datetime | None = None, before: uuid.UUID | None = None) -> Iterator[Job]:
        """The tenant's jobs newest first, lazily (the driver reads pages as they are consumed): those older
        than job ``before`` when it is given, from the month of ``since`` (or the last 13 months) on. A caller
        that filters stops when it has enough."""
        tenant = names.tenant(tenant)
        newest = bucket_of(before) if before is not None else None
        for bucket in reversed(months_since(since)):
            if newest is not None and bucket > newest:
                continue
            if newest is not None and bucket == newest:
                rows = self.session.execute(self._older, (tenant, bucket, before))
            else:
                rows = self.session.execute(self._page, (tenant, bucket))
            for row in rows:
                yield _from_row(row)

    def count_since(self, tenant: str, since: datetime) -> int:
        n = 0
        for bucket in _buckets_between(since, datetime.now(timezone.utc)):
            n += sum(1 for _ in self.session.execute(self._since, (tenant, bucket, min_uuid_from_time(since))))
        return n

    def already_received(self, tenant: str, sha256: str) -> tuple[uuid.UUID, str] | None:
        row = self.session.execute(self._seen, (tenant, sha256)).one()
        return (row.job_id, row.file_name) if row else None

    def remember(self, job: Job) -> None:
        self.session.execute(self._remember, (job.tenant, job.sha256, job.job_id, job.file_name))

    def delete(self, tenant: str, job_id: uuid.UUID) -> None:
        self.session.execute(self._delete, (tenant, bucket_of(job_id), job_id))

    def forget(self, tenant: str, sha256: str) -> None:
        """A failed file may be sent again once fixed: forget its content."""
        self.session.execute(self._forget, (tenant, sha256))


def job_file(cfg: Config, job: Job, kind: str) -> Path:
    """The job's ``log`` or ``rejects`` file, only if it is a regular file inside the tenant's own archive,
    quarantine or work folder (a receipt's path is never trusted as it is); NotFound otherwise."""
    recorded = {"log": job.log_path, "rejects": job.rejects_path}[kind]
    if not recorded:
        raise NotFound("there is no such file for this job")
    p, paths = Path(recorded).resolve(), cfg.paths
    allowed = [f(job.tenant).resolve() for f in (paths.archive, paths.quarantine, paths.work)]
    if not any(p.is_relative_to(a) for a in allowed) or not p.is_file():
        raise NotFound("there is no such file for this job (any more)")
    return p


def _from_row(row) -> Job:
    data = {c: getattr(row, c) for c in _COLUMNS}
    job = Job(tenant=row.tenant, job_id=row.job_id, **data)
    job.status = JobStatus(job.status or JobStatus.STAGED)
    for k in ("created_at", "started_at", "finished_at"):
        v = getattr(job, k)
        if v is not None and v.tzinfo is None:
            setattr(job, k, v.replace(tzinfo=timezone.utc))
    return job


def _recent_buckets(months: int) -> Iterator[str]:
    now = datetime.now(timezone.utc)
    y, m = now.year, now.month
    for _ in range(months):
        yield f"{y:04d}-{m:02d}"
        m -= 1
        if m == 0:
            y, m = y - 1, 12


def _buckets_between(start: datetime, end: datetime) -> list[str]:
    out, cur = [], start.replace(day=1)
    while cur <= end:
        out.append(cur.strftime("%Y-%m"))
        cur = (cur + timedelta(days=32)).replace(day=1)
    return out


def months_since(start: datetime | None) -> list[str]:
    """Every yyyy-mm bucket from ``start``'s month to this one, oldest first (the last 13 months when
    ``start`` is unknown)."""
    now = datetime.now(timezone.utc)
    if start is None:
        return list(reversed(list(_recent_buckets(13))))
    start = start if start.tzinfo else start.replace(tzinfo=timezone.utc)
    return _buckets_between(start, now)


def days_since(start: datetime | None, limit: int = 31) -> list[str]:
    """The yyyy-mm-dd day buckets from ``start`` (at most ``limit`` of the most recent) to today."""
    now = datetime.now(timezone.utc)
    start = start if start and start.tzinfo else (start or now).replace(tzinfo=timezone.utc)
    n = min(limit, (now.date() - start.date()).days + 1)
    return [(now - timedelta(days=i)).strftime("%Y-%m-%d") for i in range(max(n, 1))]


def append_log(cfg: Config, job: Job) -> None:
    path: Path = cfg.paths.ingestion_log()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(job.log_line() + "\n")
