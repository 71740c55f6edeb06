"""Receiving files: resumable upload sessions, streamed to disk, checked, verified, then staged.

An upload session is opened with the file's name, size and SHA-256. Its bytes are appended (in one or
several requests, so an interrupted upload resumes where it stopped) to ``uploads/<tenant>/<id>.part``
in constant memory. Every constraint is enforced again here, because a client can lie: the name is made
safe, the format must be allowed and the content must match it, the size may never pass the declared size
or the tenant's maximum (the request is refused as soon as it would), and the number of files is counted
under a per-tenant lock. When the last byte arrives the size and checksum are verified, a job record is
written, and only then is the file renamed into ``staging/<tenant>/``, where the batch manager sees it.

A failed job's file waits in the tenant's quarantine; :meth:`Uploads.replay` stages it again, once the app is
fixed, as a new job that names the one it replays (``mysimbdp jobs replay JOB``, the dashboard's button).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import secrets
import stat
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Iterator

from mysimbdp import constraints as constraints_mod
from mysimbdp import bounded, metrics
from mysimbdp import names
from mysimbdp.config import Config
from mysimbdp.daemon import write_atomic
from mysimbdp.errors import (
    ConstraintViolation,
    Conflict,
    FileTooLarge,
    NotFound,
    ReplayRefused,
    TenantError,
    TooManyFiles,
)
from mysimbdp.filecheck import ContentChecker
from mysimbdp.jobs import Job, JobStatus, JobStore, new_job_id
from mysimbdp.locks import file_lock
from mysimbdp.tenants import Tenant

CHUNK = 1 << 20
SESSION_TTL = 24 * 3600  # an unfinished upload can be resumed this long
SESSION_IDLE = 600  # after this long without a byte, it no longer holds one of the tenant's max_files places
MAX_IDLE_SESSIONS = 4  # idle sessions a tenant may keep (for resuming later); older ones are dropped
_ID = re.compile(r"[0-9a-f]{32}")
_SHA = re.compile(r"[0-9a-f]{64}")
REPLAYED_AS = "replayed-as"  # in a failed job's quarantine folder, once its file was staged again: the new job


@contextmanager
def _counted(tenant: str) -> Iterator[None]:
    """Count a refused file in the metrics (a duplicate, or a constraint, size or checksum it broke)."""
    try:
        yield
    except Duplicate:
        metrics.UPLOADS.labels(tenant, "duplicate").inc()
        raise
    except (ConstraintViolation, FileTooLarge):
        metrics.UPLOADS.labels(tenant, "rejected").inc()
        raise


class Duplicate(Exception):
    """The same content was received before; carries the earlier job."""

    def __init__(self, job_id, file_name: str) -> None:
        super().__init__(f"already uploaded as job {job_id} ({file_name})")
        self.job_id = job_id
        self.file_name = file_name


@dataclass
class Session:
    id: str
    tenant: str
    name: str
    fmt: str
    size: int
    sha256: str
    client: str
    created: float

    def public(self, offset: int) -> dict:
        return {"upload_id": self.id, "name": self.name, "size": self.size, "offset": offset, "sha256": self.sha256}


class Uploads:
    def __init__(self, cfg: Config, jobs: JobStore) -> None:
        self.cfg = cfg
        self.jobs = jobs

    # --- places -------------------------------------------------------------------------------------
    def _dir(self, tenant: str) -> Path:
        d = self.cfg.paths.uploads(tenant)
        d.mkdir(parents=True, exist_ok=True)
        return d

    def _part(self, s: Session) -> Path:
        return self._dir(s.tenant) / f"{s.id}.part"

    def _meta(self, tenant: str, upload_id: str) -> Path:
        return self._dir(tenant) / f"{upload_id}.json"

    @contextmanager
    def _tenant_lock(self, tenant: str) -> Iterator[None]:
        with file_lock(self._dir(tenant) / ".lock"):
            yield

    def _sessions(self, tenant: str) -> list[Session]:
        out = []
        now = time.time()
        for meta in self._dir(tenant).glob("*.json"):
            try:
                s = Session(**json.loads(meta.read_text()))  # bounded: written by this API (a checked name, numbers)
            except (OSError, ValueError, TypeError):
                continue
            if now - s.created > SESSION_TTL:  # abandoned: forget it
                self._drop(s)
                continue
            out.append(s)
        return out

    def _active(self, s: Session) -> bool:
        """Whether bytes arrived for this session lately (abandoned ones must not block new files)."""
        try:
            last = self._part(s).stat().st_mtime
        except OSError:
            last = s.created
        return time.time() - max(last, s.created) < SESSION_IDLE

    def _drop(self, s: Session) -> None:
        self._part(s).unlink(missing_ok=True)
        self._meta(s.tenant, s.id).unlink(missing_ok=True)

    def get(self, tenant: str, upload_id: str) -> tuple[Session, int]:
        if not _ID.fullmatch(upload_id or ""):
            raise NotFound(f"no upload {upload_id!r}")
        try:
            s = Session(**json.loads(self._meta(tenant, upload_id).read_text()))  # bounded: as above
        except (OSError, ValueError, TypeError):
            raise NotFound(f"no upload {upload_id!r}") from None
        part = self._part(s)
        return s, part.stat().st_size if part.exists() else 0

    # --- limits -------------------------------------------------------------------------------------
    def _files_in_flight(self, tenant: str) -> int:
        """Files staged or being ingested (for max_files per 'staged')."""
        p = self.cfg.paths
        # by job id: while the manager claims a file, it is in staging and its work folder exists already
        staged = {
            f.name.split(".")[0] for f in p.staging(tenant).glob("*") if f.is_file() and not f.name.startswith(".")
        }
        working = {d.name for d in p.work(tenant).glob("*") if d.is_dir()}
        return len(staged | working)

    def _check_count(self, t: Tenant, open_sessions: int) -> None:
        c = t.constraints
        if c.max_files_per == "staged":
            n = self._files_in_flight(t.name) + open_sessions
            what = "files waiting or being ingested"
        else:
            midnight = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
            n = self.jobs.count_since(t.name, midnight) + open_sessions
            what = "files today (UTC)"
        if n >= c.max_files:
            raise TooManyFiles(
                f"the limit of {c.max_files} {what} is reached",
                hint="wait for the files being ingested" if c.max_files_per == "staged" else "try again tomorrow",
            )

    # --- the protocol -------------------------------------------------------------------------------
    def open(self, t: Tenant, name: str, size: object, sha256: object, client: str) -> tuple[Session, int]:
        with _counted(t.name):
            return self._open(t, name, size, sha256, client)

    def _open(self, t: Tenant, name: str, size: object, sha256: object, client: str) -> tuple[Session, int]:
        """Open (or resume) an upload session. Raises Duplicate when this content was received before."""
        if not isinstance(name, str):
            raise TenantError("'name' must be the file's name, as a string")
        name = names.safe_file_name(name)
        fmt = constraints_mod.check_file_name(t.constraints, name)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise TenantError("'size' must be the file's size, a whole number of bytes")
        constraints_mod.check_size(t.constraints, name, size)
        if not isinstance(sha256, str) or not _SHA.fullmatch(sha256.lower()):
            raise TenantError("'sha256' must be the file's SHA-256 as 64 hex digits")
        sha256 = sha256.lower()
        seen = self.jobs.already_received(t.name, sha256)
        if seen:
            raise Duplicate(*seen)
        with self._tenant_lock(t.name):
            sessions = self._sessions(t.name)
            for s in sessions:
                if s.name == name and s.size == size and s.sha256 == sha256:
                    part = self._part(s)
                    return s, part.stat().st_size if part.exists() else 0
            active = [s for s in sessions if self._active(s)]
            self._check_count(t, len(active))
            # an idle session holds no place, and no disk either: the oldest go for the new one
            idle = sorted((s for s in sessions if s not in active), key=lambda s: s.created)
            for s in idle[: max(0, len(idle) - MAX_IDLE_SESSIONS + 1)]:
                self._drop(s)
            s = Session(secrets.token_hex(16), t.name, name, fmt, size, sha256, client, time.time())
            meta = self._meta(t.name, s.id)
            meta.write_text(json.dumps(asdict(s)))
            os.chmod(meta, 0o600)
            return s, 0

    def append(
        self, t: Tenant, upload_id: str, offset: int, body: BinaryIO, length: int | None
    ) -> tuple[int, Job | None]:
        """Append a request body at ``offset``. Returns the new offset, and the job once complete."""
        s, _ = self.get(t.name, upload_id)
        with self._only_request(s):
            try:
                with _counted(t.name):
                    offset, job = self._append_locked(t, s, offset, body, length)
            except FileNotFoundError:  # its files went away under it (the tenant's session expired meanwhile)
                raise NotFound(f"upload {upload_id} was ended", hint="open it again with POST /v1/uploads") from None
        if job is not None:
            metrics.UPLOADS.labels(t.name, "staged").inc()
        return offset, job

    @contextmanager
    def _only_request(self, s: Session) -> Iterator[None]:
        """One request at a time per upload (appending, or abandoning it)."""
        try:
            guard = open(self._meta(s.tenant, s.id), "r")
        except FileNotFoundError:
            raise NotFound(f"no upload {s.id!r}") from None
        with guard:
            try:
                fcntl.flock(guard, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise Conflict(f"upload {s.id} is being written by another request", code="upload_busy") from None
            yield

    def _append_locked(
        self, t: Tenant, s: Session, offset: int, body: BinaryIO, length: int | None
    ) -> tuple[int, Job | None]:
        part = self._part(s)
        have = part.stat().st_size if part.exists() else 0
        upload_id = s.id
        if offset != have:
            raise Conflict(
                f"upload {upload_id} is at offset {have}, not {offset}",
                hint="resume from Upload-Offset",
                code="offset_mismatch",
            )
        if length is not None and have + length > s.size:
            raise FileTooLarge(f"{s.name}: {have + length} bytes would pass the declared size of {s.size}")
        checker = ContentChecker(s.fmt, s.name) if have == 0 else None
        digest = hashlib.sha256() if have == 0 else None
        received = 0
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            with os.fdopen(fd, "ab", buffering=0) as out:
                while True:
                    want = CHUNK if length is None else min(CHUNK, length - received)
                    if want <= 0:
                        break
                    try:
                        chunk = body.read(want)
                    except (OSError, ValueError) as exc:  # the client went away: keep what arrived
                        out.flush()
                        os.fsync(out.fileno())
                        raise Interrupted(have + received) from exc
                    if not chunk:
                        break
                    if have + received + len(chunk) > s.size:
                        self._drop(s)
                        raise FileTooLarge(f"{s.name}: the body passes the declared size of {s.size} bytes")
                    if b"\0" in chunk:
                        self._drop(s)
                        raise ConstraintViolation(f"{s.name}: is not a {s.fmt.upper()} text file (NUL bytes)")
                    if checker is not None:
                        try:
                            checker.feed(chunk)
                        except ConstraintViolation:
                            self._drop(s)
                            raise
                        digest.update(chunk)
                    out.write(chunk)
                    received += len(chunk)
                os.fsync(out.fileno())
        finally:
            metrics.UPLOAD_BYTES.labels(t.name).inc(received)
        offset = have + received
        if length is not None and received < length:
            raise Interrupted(offset)
        if offset < s.size:
            return offset, None
        return offset, self._finish(t, s, checker, digest)

    def _finish(self, t: Tenant, s: Session, checker: ContentChecker | None, digest) -> Job:
        part = self._part(s)
        if checker is None or digest is None:  # resumed: check the whole file once more
            checker, digest = ContentChecker(s.fmt, s.name), hashlib.sha256()
            with open(part, "rb") as fh:
                for chunk in iter(lambda: fh.read(CHUNK), b""):
                    checker.feed(chunk)
                    digest.update(chunk)
        size = part.stat().st_size
        if size != s.size:
            raise Conflict(f"{s.name}: received {size} bytes, declared {s.size}")
        if digest.hexdigest() != s.sha256:
            self._drop(s)
            raise ConstraintViolation(
                f"{s.name}: the checksum does not match (corrupted in transit?)", hint="send the file again"
            )
        try:
            checker.finish()
        except ConstraintViolation:
            self._drop(s)
            raise
        with self._tenant_lock(t.name):
            seen = self.jobs.already_received(t.name, s.sha256)
            if seen:
                self._drop(s)
                raise Duplicate(*seen)
            job = self._stage(t, s, part)
        return job

    def _stage(self, t: Tenant, s: Session, part: Path) -> Job:
        job_id = new_job_id()
        stored = f"{job_id}.{s.fmt}"
        job = Job(
            tenant=t.name,
            job_id=job_id,
            file_name=s.name,
            stored_name=stored,
            size=s.size,
            sha256=s.sha256,
            client_address=s.client,
            created_at=datetime.now(timezone.utc),
            status=JobStatus.STAGED,
        )
        self.jobs.save(job)
        self.jobs.remember(job)
        staging = self.cfg.paths.staging(t.name)
        staging.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            os.chown(part, 0, t.uid)
        os.chmod(part, 0o640)
        os.rename(part, staging / stored)  # the batch manager sees the file only now, complete
        self._meta(t.name, s.id).unlink(missing_ok=True)
        return job

    # --- replays ------------------------------------------------------------------------------------
    def replay(self, t: Tenant, job_id: str) -> Job:
        """Stage the file of the failed job ``job_id`` again, out of the tenant's quarantine, as a new job that
        names it (``replay_of``); the failed job's receipt stays as it is. NotFound for a job that is not the
        tenant's; ReplayRefused, with nothing staged, unless the job failed and its file is still in the
        quarantine. The file is moved, under the tenant's lock, so a job is replayed once (its replay, if it
        fails in turn, can be replayed again). The tenant's constraints count as for an upload (its number
        of files, the file's name and size); the duplicate check does not: a failed job's content is
        forgotten, and a replay is asked for on purpose."""
        old = self.jobs.get(t.name, job_id)
        if old.status != JobStatus.FAILED:
            raise ReplayRefused(
                f"job {old.job_id} is {old.status}: only a failed job can be replayed",
                hint="a failed job's file waits in the quarantine until it is replayed",
                code="not_failed",
            )
        with self._tenant_lock(t.name):
            q = quarantined(self.cfg, old)
            if q.file is None:
                raise ReplayRefused(
                    f"the file of job {old.job_id} is no longer in the quarantine"
                    + (f": it was replayed as job {q.replayed_as}" if q.replayed_as else ""),
                    code="not_in_quarantine",
                )
            constraints_mod.check_file_name(t.constraints, old.file_name)
            size = q.file.stat().st_size
            constraints_mod.check_size(t.constraints, old.file_name, size)
            self._check_count(t, sum(1 for s in self._sessions(t.name) if self._active(s)))
            job_id_new = new_job_id()
            job = Job(
                tenant=t.name,
                job_id=job_id_new,
                file_name=old.file_name,
                stored_name=f"{job_id_new}{q.file.suffix}",
                size=size,
                sha256=old.sha256,
                client_address=old.client_address,
                created_at=datetime.now(timezone.utc),
                status=JobStatus.STAGED,
                replay_of=old.job_id,
            )
            self.jobs.save(job)
            staging = self.cfg.paths.staging(t.name)
            staging.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(q.file, staging / job.stored_name)  # the batch manager sees it now
            except OSError:
                self.jobs.delete(t.name, job.job_id)
                raise
            write_atomic(q.folder / REPLAYED_AS, f"{job.job_id}\n")
            if job.sha256:
                self.jobs.remember(job)  # as an upload would: the same content sent meanwhile is a duplicate
        return job

    def abort(self, t: Tenant, upload_id: str) -> None:
        s, _ = self.get(t.name, upload_id)
        with self._only_request(s):  # not under a request that is appending to it
            self._drop(s)


@dataclass(frozen=True)
class Quarantined:
    """What the quarantine holds of a failed job: its file (None once replayed, or gone) and the job that
    replayed it."""

    folder: Path
    file: Path | None
    replayed_as: str | None


def quarantined(cfg: Config, job: Job) -> Quarantined:
    """The quarantine of ``job``: ``quarantine/<tenant>/<job id>/<job id>.<format>``. The stored name comes
    from the receipt and must be the job's own id and a format; the file must be a regular one."""
    folder = cfg.paths.quarantine(job.tenant) / str(job.job_id)
    file = None
    if re.fullmatch(re.escape(str(job.job_id)) + r"\.[a-z0-9]{1,10}", job.stored_name or ""):
        candidate = folder / job.stored_name
        try:
            file = candidate if stat.S_ISREG(candidate.lstat().st_mode) else None
        except OSError:
            file = None
    replayed_as = None
    try:
        text = bounded.read_regular(folder / REPLAYED_AS, 64).decode("ascii", "replace").strip()
        replayed_as = text if re.fullmatch(r"[0-9a-f-]{36}", text) else None
    except (OSError, ValueError):
        pass
    return Quarantined(folder, file, replayed_as)


class Interrupted(Exception):
    """The body stopped before its end; what arrived is kept and the upload can resume."""

    def __init__(self, offset: int) -> None:
        super().__init__(f"interrupted at offset {offset}")
        self.offset = offset
