"""The life of a batch app in one call::

    from mysimbdp_app.batch import run_batch
    raise SystemExit(run_batch(FLIGHTS))

It connects to the tenant's keyspace, creates the table if absent, reads the staged file (CSV, TSV or
JSON lines), converts each record, writes good rows with bounded concurrent prepared writes (batched per
partition), keeps malformed records in the rejects file, writes the result, and returns the exit status
the platform expects: 0 done, 75 Cassandra unavailable (retry later), 1 the file itself is unusable.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Callable, Iterator

from . import store
from .context import EXIT_FAILED, EXIT_OK, EXIT_TEMPORARY, Context, TemporaryFailure
from .records import RejectsFile, Rejected, Table, open_text, read_csv


def _read(path: str, table: Table) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    if not path.lower().endswith(".jsonl"):
        return read_csv(path)
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
                except ValueError as exc:
                    yield n, ["\0csv-error", f"not a JSON object: {exc}"]
                    continue
                yield n, ["" if obj.get(c) is None else str(obj.get(c)) for c in names]

    return names, records()


def run_batch(table: Table, *, transform: Callable[[tuple], tuple] | None = None, concurrency: int = 48,
              batch_rows: int = 64, retry_for: float = 60.0, ctx: Context | None = None) -> int:
    """Ingest the staged file into ``table``; return the exit status.

    ``transform`` may change a converted row (or raise Rejected); ``retry_for`` is how long Cassandra may
    stay unreachable before the app gives up with exit 75 and lets the platform retry the job later.
    """
    ctx = ctx or Context.from_env()
    t0 = time.monotonic()
    rows = rejected = 0
    session = None
    try:
        session = store.connect(ctx, retry_for=retry_for)
        store.execute_with_retry(session, table.create_cql(ctx.keyspace), retry_for=retry_for)
        insert = session.prepare(table.insert_cql(ctx.keyspace))
        header, records = _read(ctx.input_file or "", table)
        convert = table.converter(header)
        rejects = RejectsFile(ctx.rejects_path, header)
        writer = store.Writer(session, insert, concurrency=concurrency, partition_of=table.partition_of,
                              batch_rows=batch_rows, retry_for=retry_for)
        for line, record in records:
            if record and record[0] == "\0csv-error":
                rejects.add(line, record[1], [])
                continue
            try:
                values = convert(record)
                if transform is not None:
                    values = transform(values)
                writer.add(values)
            except (Rejected, ValueError) as exc:
                rejects.add(line, str(exc), record)
        rows = writer.close()
        rejected = rejects.count
        rejects.close()
        seconds = time.monotonic() - t0
        ctx.write_result(rows, rejected, seconds=round(seconds, 3), table=table.name)
        print(f"ingested {rows} rows into {ctx.keyspace}.{table.name}, rejected {rejected}, in {seconds:.2f}s")
        return EXIT_OK
    except TemporaryFailure as exc:
        print(f"Cassandra unavailable, the platform will retry: {exc}", file=sys.stderr)
        return EXIT_TEMPORARY
    except Rejected as exc:
        ctx.write_result(0, 0, error=str(exc))
        print(f"the file cannot be ingested: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        if session is not None:
            session.cluster.shutdown()
