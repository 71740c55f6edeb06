"""The life of a batch app in one call::

    from mysimbdp_app.batch import run_batch
    raise SystemExit(run_batch(FLIGHTS))

It connects to the tenant's keyspace, creates the table if absent, reads the staged file (CSV, TSV or
JSON lines), converts each record, writes good rows with bounded concurrent prepared writes (batched per
partition), keeps malformed records in the rejects file, writes the result, and returns the exit status
the platform expects: 0 done, 75 Cassandra unavailable (retry later), 1 the file itself is unusable.

A large CSV/TSV file is cut into byte ranges at record boundaries and worked by several processes at
once, as many as the CPUs the sandbox grants (``MYSIMBDP_CPUS``, rounded up).
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from mysimbdp import csvrecords

from . import store
from .context import EXIT_FAILED, EXIT_OK, EXIT_TEMPORARY, Context, TemporaryFailure
from .records import RejectsFile, Rejected, Table, open_text

PARALLEL_MIN_BYTES = 8 << 20  # smaller files are not worth a second process


def _read_jsonl(path: str, table: Table) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    names = [c for c, _ in table.columns]

    def records() -> Iterator[tuple[int, list[str]]]:
        with open_text(path) as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                    if not isinstance(obj, dict):
                        raise ValueError("not an object")
                except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep
                    yield n, ["\0csv-error", f"not a JSON object: {type(exc).__name__}: {exc}"[:300]]
                    continue
                yield n, ["" if obj.get(c) is None else str(obj.get(c)) for c in names]

    return names, records()


# --- CSV and TSV: whole records, in one range or several --------------------------------------------------


def _csv_ranges(path: str, procs: int) -> list[csvrecords.Range]:
    """The file's records after the header: one range, or ``procs`` for a file large enough to share.

    Where records end is found by the platform's one record reader (``mysimbdp.csvrecords``, mounted into
    the sandbox), which reads quotes exactly as the csv module does; each range is checked to end where a
    record ends, so no record can be cut or made up."""
    parts = procs if procs > 1 and os.path.getsize(path) >= PARALLEL_MIN_BYTES else 1
    return csvrecords.ranges(path, parts, csvrecords.delimiter_for(path))


# --- the work -----------------------------------------------------------------------------------------------


@dataclass
class _Options:
    transform: Callable[[tuple], tuple] | None
    concurrency: int
    batch_rows: int
    retry_for: float


def _ingest(
    ctx: Context,
    table: Table,
    header: list[str],
    records: Iterator[tuple[int, list[str]]],
    rejects_path: str,
    opts: _Options,
    session=None,
) -> tuple[int, int]:
    """Write one stream of records (on ``session``, or a session of its own); return (rows written, rows
    rejected)."""
    own = session is None
    if own:
        session = store.connect(ctx, retry_for=opts.retry_for)
    try:
        insert = store.prepared(session, table.insert_cql(ctx.keyspace))
        convert = table.converter(header)
        rejects = RejectsFile(rejects_path, header)
        writer = store.Writer(
            session,
            insert,
            concurrency=opts.concurrency,
            partition_of=table.partition_of,
            batch_rows=opts.batch_rows,
            retry_for=opts.retry_for,
        )
        transform = opts.transform
        previous = 0  # the line the previous record ended on
        for line, record in records:
            if record and record[0] == "\0csv-error":
                rejects.add(line, record[1], [])
                previous = line
                continue
            try:
                values = convert(record)
                if transform is not None:
                    values = transform(values)
                writer.add(values)
            except (Rejected, ValueError) as exc:
                reason = str(exc)
                if previous and line - previous > 1:  # one record over many lines: a quote left open?
                    reason += f" (this record runs over lines {previous + 1} to {line}: is a quote left open?)"
                rejects.add(line, reason, record)
            previous = line
        rows = writer.close()
        rejects.close()
        return rows, rejects.count
    finally:
        if own:
            session.cluster.shutdown()


def _worker(ctx, table, header, path, r, rejects_path, opts, out) -> None:
    try:
        out.send(("ok", *_ingest(ctx, table, header, csvrecords.read_range(path, r), rejects_path, opts)))
    except TemporaryFailure as exc:
        out.send(("temporary", str(exc)))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which decides
        out.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        out.close()


def cpus() -> int:
    try:
        return max(1, math.ceil(float(os.environ.get("MYSIMBDP_CPUS", "1"))))
    except ValueError:
        return 1


def run_batch(
    table: Table,
    *,
    transform: Callable[[tuple], tuple] | None = None,
    concurrency: int = 48,
    batch_rows: int = 64,
    retry_for: float = 60.0,
    processes: int | None = None,
    ctx: Context | None = None,
) -> int:
    """Ingest the staged file (or files) into ``table``; return the exit status.

    ``transform`` may change a converted row (or raise Rejected); ``retry_for`` is how long Cassandra may
    stay unreachable before the app gives up with exit 75 and lets the platform retry the job later;
    ``processes`` defaults to the CPUs the sandbox grants.

    A run of several files (the app's ``files_per_run``) opens one session for all of them and writes each
    file's own result; a file that cannot be ingested gets a result that says why, and the others go on.
    """
    ctx = ctx or Context.from_env()
    opts = _Options(transform, concurrency, batch_rows, retry_for)
    procs = processes or cpus()
    session = _Session(ctx, retry_for)
    try:
        try:
            store.execute_with_retry(session.get(), table.create_cql(ctx.keyspace), retry_for=retry_for)
        except TemporaryFailure as exc:
            print(f"Cassandra unavailable, the platform will retry: {exc}", file=sys.stderr)
            return EXIT_TEMPORARY
        if not ctx.jobs:
            return _one_file(ctx, table, opts, procs, session, alone=True)
        if procs > 1 and len(ctx.jobs) > 1:  # the files shared out over the CPUs the sandbox grants
            session.close()  # before forking
            return _pack_in_processes(ctx, table, opts, procs, retry_for)
        return _pack(ctx, ctx.jobs, table, opts, procs, session)
    finally:
        session.close()


def _pack(ctx: Context, jobs, table: Table, opts: _Options, procs: int, session: "_Session") -> int:
    """Each file of ``jobs`` in turn, on one session; 75 as soon as Cassandra is away (the files without a
    result run again later)."""
    for job in jobs:
        if _one_file(ctx.for_job(job), table, opts, procs, session, alone=False) == EXIT_TEMPORARY:
            return EXIT_TEMPORARY
    return EXIT_OK


def _pack_worker(ctx, table, opts, jobs, retry_for, out) -> None:
    session = _Session(ctx, retry_for)
    try:
        out.send(_pack(ctx, jobs, table, opts, 1, session))
    except BaseException as exc:  # noqa: BLE001 - the parent decides
        print(f"a worker stopped: {type(exc).__name__}: {exc}", file=sys.stderr)
        out.send(EXIT_FAILED)
    finally:
        session.close()
        out.close()


def _pack_in_processes(ctx: Context, table: Table, opts: _Options, procs: int, retry_for: float) -> int:
    mp = multiprocessing.get_context("fork")
    workers = []
    for k in range(min(procs, len(ctx.jobs))):
        recv, send = mp.Pipe(duplex=False)
        p = mp.Process(target=_pack_worker, args=(ctx, table, opts, ctx.jobs[k::procs], retry_for, send))
        p.start()
        send.close()
        workers.append((p, recv))
    statuses = []
    for p, recv in workers:
        try:
            statuses.append(recv.recv())
        except EOFError:
            statuses.append(EXIT_FAILED)  # its files without a result run again, alone
        p.join()
    if EXIT_TEMPORARY in statuses:
        return EXIT_TEMPORARY
    return EXIT_FAILED if EXIT_FAILED in statuses else EXIT_OK


class _Session:
    """The run's one Cassandra session, made when first needed and closed before the run forks worker
    processes (the driver's threads must not be copied into a child half-way through something)."""

    def __init__(self, ctx: Context, retry_for: float) -> None:
        self.ctx, self.retry_for, self._session = ctx, retry_for, None

    def get(self):
        if self._session is None:
            self._session = store.connect(self.ctx, retry_for=self.retry_for)
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.cluster.shutdown()
            self._session = None


def _one_file(ctx: Context, table: Table, opts: _Options, procs: int, session: _Session, *, alone: bool) -> int:
    """Ingest ``ctx.input_file`` and write its result; the exit status it calls for."""
    t0 = time.monotonic()
    path = ctx.input_file or ""
    try:
        if path.lower().endswith(".jsonl"):
            header, records = _read_jsonl(path, table)
            rows, rejected = _ingest(ctx, table, header, records, ctx.rejects_path, opts, session.get())
        else:
            header = csvrecords.read_header(path)
            if not header:
                raise Rejected("the file is empty")
            table.converter(header)  # a bad header fails here, once
            parts = _csv_ranges(path, procs)
            if len(parts) > 1:
                session.close()  # before forking
                rows, rejected = _parallel(ctx, table, header, path, parts, opts)
            else:
                records = csvrecords.read_range(path, parts[0]) if parts else iter(())
                rows, rejected = _ingest(ctx, table, header, records, ctx.rejects_path, opts, session.get())
        seconds = time.monotonic() - t0
        ctx.write_result(rows, rejected, seconds=round(seconds, 3), table=table.name)
        print(
            f"{ctx.file_name}: ingested {rows} rows into {ctx.keyspace}.{table.name}, rejected {rejected}, "
            f"in {seconds:.2f}s"
        )
        return EXIT_OK
    except TemporaryFailure as exc:
        print(f"Cassandra unavailable, the platform will retry: {exc}", file=sys.stderr)
        return EXIT_TEMPORARY
    except Rejected as exc:
        ctx.write_result(0, 0, error=str(exc))
        print(f"{ctx.file_name}: the file cannot be ingested: {exc}", file=sys.stderr)
        return EXIT_FAILED if alone else EXIT_OK
    except Exception as exc:  # noqa: BLE001 - e.g. Cassandra refusing a write: one line for the receipt
        message = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:500]
        ctx.write_result(0, 0, error=message)
        print(f"{ctx.file_name}: the ingestion stopped: {message}", file=sys.stderr)
        return EXIT_FAILED if alone else EXIT_OK


def _parallel(
    ctx: Context, table: Table, header: list[str], path: str, parts: list[csvrecords.Range], opts: _Options
) -> tuple[int, int]:
    mp = multiprocessing.get_context("fork")
    workers = []
    for k, r in enumerate(parts):
        recv, send = mp.Pipe(duplex=False)
        p = mp.Process(target=_worker, args=(ctx, table, header, path, r, f"{ctx.rejects_path}.{k}", opts, send))
        p.start()
        send.close()
        workers.append((p, recv))
    results = []
    for p, recv in workers:
        try:
            results.append(recv.recv())
        except EOFError:
            results.append(("error", "a worker process died"))
        p.join()
    if any(r[0] == "temporary" for r in results):
        raise TemporaryFailure(next(r[1] for r in results if r[0] == "temporary"))
    errors = [r[1] for r in results if r[0] == "error"]
    if errors:
        raise RuntimeError("; ".join(errors))
    _merge_rejects(ctx.rejects_path, header, len(parts))
    return sum(r[1] for r in results), sum(r[2] for r in results)


def _merge_rejects(path: str, header: list[str], n: int) -> None:
    with open(path, "w", encoding="utf-8", newline="") as out:
        for k in range(n):
            part = f"{path}.{k}"
            with open(part, encoding="utf-8", newline="") as fh:
                first = fh.readline()
                if k == 0:
                    out.write(first)
                for chunk in iter(lambda: fh.read(1 << 20), ""):
                    out.write(chunk)
            os.unlink(part)
