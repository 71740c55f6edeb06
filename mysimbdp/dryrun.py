"""A dry run of a tenant's app, before it is installed: the app runs in the sandbox exactly as it will on real
data (the same image, the tenant's limits, the same environment), on the sample file the tenant put in its
app folder, into a scratch keyspace that is dropped afterwards. mysimbdp/appchecks.py decides from the
outcome whether the app is installed.

Each dry run has a scratch name ``dryrun_<12 hex digits>`` (``names.SCRATCH_PATTERN``; no tenant may take
one) for everything it makes: a keyspace with the inbox tables, a Cassandra role that may use only that
keyspace, for a stream app a broker user ``app.<scratch>.s0`` with the rights of an instance, its containers
(label ``mysimbdp.dryrun``), and a folder ``state/dryruns/<scratch>/`` (the checked copy of the app, the
input and the output). The folder's ``owner.json`` is written before anything else is made; everything is
dropped when the dry run ends, whatever its end; and :func:`sweep`, run before every check, drops what a
process that died half-way (a killed CLI) left behind.

* batch: one run of the app on the sample, as a job of one file; judged by the same code as real jobs
  (mysimbdp/outcome.py);
* stream: the sample's records (after its header line) are written into the scratch inbox as the inbox writer
  writes chunks; one instance is started, its reports are read (and checked as the stream controller checks
  them), it is given all the lanes once it reports, and the dry run waits until its offsets reach the end of
  every lane, then for the report that counts them, then stops it.

The dry run's log (the container's output, at most its first and last MiB) is kept in
``state/logs/dryruns/``; the last LOG_FILES are kept.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import queue
import secrets
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterator

from cassandra.cluster import Session
from cassandra.query import SimpleStatement

from . import apps, bounded, broker, contract, credentials, csvrecords, db, inbox, names, outcome
from .config import Config
from .constraints import Constraints
from .errors import BrokerUnavailable, CassandraUnavailable, TenantError
from .jobs import JobStatus
from .sandbox import RunSpec, outputs, runtime
from .services import mosquitto_broker
from .tenants import Tenant

log = logging.getLogger(__name__)
LOG_FILES = 50  # dry-run logs kept in state/logs/dryruns
SLOT = "s0"
CHUNK_RECORDS = 256  # records per inbox chunk of a stream sample (so that a sample spreads over the lanes)
FIRST_REPORT_SECONDS = 60.0  # a stream instance that has not reported by then is refused
STOP_SECONDS = 10.0  # a stream instance gets this long to stop at the end of its dry run
MAX_TABLES_COUNTED = 32
LOG_TAIL_LINES = 20


class Refused(Exception):
    """The app failed its dry run (the reason is the message); caught by mysimbdp/appchecks.py."""


@dataclass
class Result:
    """What a dry run found."""

    rows: int  # rows the app says it wrote (its result.json, or its reports)
    rejects: int
    seconds: float
    rows_found: int | None  # rows in its scratch keyspace's tables afterwards (None: could not be counted)
    records: int  # records in the sample it was given
    log_path: Path | None
    run_seconds: float = 0.0  # from the start of its container to the end of the dry run


@dataclass
class Scratch:
    cfg: Config
    session: Session
    name: str  # the keyspace, the role and the broker namespace
    folder: Path  # state/dryruns/<name>
    owner: str  # the tenant whose app this is
    uid: int  # the sandbox user the app runs as
    constraints: Constraints
    login: db.Login | None = None

    @property
    def tenant(self) -> Tenant:
        return pseudo_tenant(self.name, self.uid, self.constraints)


def pseudo_tenant(name: str, uid: int, constraints: Constraints) -> Tenant:
    """The tenant as the contract sees it in a dry run: named after the scratch keyspace (in a real run the
    keyspace has the tenant's name too: ``MYSIMBDP_TENANT`` = ``MYSIMBDP_KEYSPACE``), with the tenant's
    constraints (its limits) and sandbox user."""
    return Tenant(names.scratch(name), "dryrun", uid, "", constraints, None, None, None)


# --- the scratch folder, keyspace and role ------------------------------------------------------------


def new_folder(cfg: Config, tenant: str) -> Path:
    """A folder for one check of an app, ``state/dryruns/<scratch>``, owned by this process (owner.json)."""
    cfg.paths.dry_runs.mkdir(parents=True, exist_ok=True)
    os.chmod(cfg.paths.dry_runs, 0o711)  # the sandbox users reach their own folder's mounts only
    name = names.scratch(names.SCRATCH_PREFIX + secrets.token_hex(6))
    folder = cfg.paths.dry_runs / name
    folder.mkdir(mode=0o711)
    owner = {"pid": os.getpid(), "started": time.time(), "tenant": tenant}
    (folder / "owner.json").write_text(json.dumps(owner))
    return folder


@contextlib.contextmanager
def scratch(
    cfg: Config, session: Session, folder: Path, tenant: str, uid: int, constraints: Constraints
) -> Iterator[Scratch]:
    """The scratch keyspace and role named after ``folder`` (made by :func:`new_folder`) for a dry run of
    ``tenant``'s app, dropped on the way out, whatever happens inside."""
    name = names.scratch(folder.name)
    s = Scratch(cfg, session, name, folder, tenant, uid, constraints)
    try:
        password = credentials.generate_password()
        # name: names.scratch above; the replication map comes from the typed configuration
        session.execute(f"CREATE KEYSPACE {name} WITH replication = {db.replication_cql(cfg)}")
        db.ensure_role(session, name, password)
        db.grant_keyspace(session, name)
        for cql in inbox.schema(name, cfg.stream.inbox_retention_hours):  # as in every tenant's keyspace
            session.execute(cql)
        s.login = db.Login(name, password)
        yield s
    finally:
        drop(cfg, session, name)


def drop(cfg: Config, session: Session, name: str) -> None:
    """Everything a dry run made but its folder: containers, broker users, keyspace, role. Idempotent."""
    name = names.scratch(name)
    rt = runtime(cfg)
    for c in rt.list(dryrun=name):
        rt.stop(c.name, timeout=2)
    mosquitto_broker.remove_users(cfg, broker.instance_users_prefix(name))
    session.execute(f"DROP KEYSPACE IF EXISTS {name}")  # name: names.scratch above
    session.execute(f"DROP ROLE IF EXISTS {name}")


def remove_folder(folder: Path) -> None:
    outputs.release_under(folder)
    bounded.remove_tree(folder)


def sweep(cfg: Config, session: Session) -> list[str]:
    """Drop what dry runs of processes that died left behind (a check killed half-way); return their names.
    A dry run whose process lives is left alone unless it is older than any dry run may take."""
    found = []
    root = cfg.paths.dry_runs
    if not root.is_dir():
        return found
    oldest = time.time() - (2 * cfg.sandbox.timeout + 600)
    for folder in sorted(root.iterdir()):
        if not names.SCRATCH_PATTERN.fullmatch(folder.name) or not folder.is_dir():
            continue
        try:  # written by new_folder (the platform's), read within bounds all the same
            owner = bounded.loads_json(bounded.read_regular(folder / "owner.json", 4096), max_bytes=4096)
            pid, started = int(owner["pid"]), float(owner["started"])
        except (OSError, ValueError, KeyError, TypeError):  # not written yet (just made), or never (died at once)
            pid, started = 0, 0.0
            if folder.stat().st_mtime > time.time() - 60:
                continue
        if pid and _alive(pid) and started > oldest:
            continue
        log.warning("dropping dry run %s, left behind by process %s", folder.name, pid or "?")
        drop(cfg, session, folder.name)
        remove_folder(folder)
        found.append(folder.name)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def log_path(cfg: Config, tenant: str, kind: str) -> Path:
    """Where a dry run's log is kept; the oldest beyond LOG_FILES are removed."""
    folder = cfg.paths.logs / "dryruns"
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)  # an app's output over its tenant's sample: the platform's eyes only
    old = sorted(folder.glob("*.log"), key=lambda p: p.stat().st_mtime)
    for p in old[: max(0, len(old) - LOG_FILES + 1)]:
        p.unlink(missing_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return folder / f"{tenant}-{kind}-{stamp}-{secrets.token_hex(2)}.log"


def log_tail(path: Path | None, lines: int = LOG_TAIL_LINES) -> list[str]:
    """The last lines of a dry run's log, printable characters only (the app wrote it)."""
    if path is None:
        return []
    try:
        text = bounded.tail(path, 16 << 10).decode("utf-8", "replace")
    except OSError:
        return []
    return [bounded.printable(ln, 200) for ln in text.splitlines()[-lines:]]


def _dry(spec: RunSpec, s: Scratch, kind: str) -> RunSpec:
    """A real run's spec, as a dry run: its own container name and kind (the batch manager and the stream
    controller leave it alone), labelled with its scratch name (the sweep finds it)."""
    return dataclasses.replace(
        spec, name=f"mysimbdp-dryrun-{s.name}-{kind}", kind="dryrun", labels={**spec.labels, "mysimbdp.dryrun": s.name}
    )


def _cassandra_answers(session: Session) -> bool:
    try:
        session.execute("SELECT now() FROM system.local", timeout=5)
        return True
    except Exception:  # noqa: BLE001 - any failure means no
        return False


def rows_found(session: Session, keyspace: str) -> int | None:
    """Rows in the tables the app made in its scratch keyspace (the inbox tables aside); None when they
    could not be counted (too many tables, a name that is not a plain identifier, a count that timed out)."""
    keyspace = names.scratch(keyspace)
    tables = [
        r.table_name
        for r in session.execute(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s", (keyspace,), timeout=10
        )
        if r.table_name not in inbox.COLUMNS
    ]
    if len(tables) > MAX_TABLES_COUNTED or not all(names.CQL_IDENTIFIER.fullmatch(t) for t in tables):
        return None
    total = 0
    try:
        for t in tables:  # t: names.CQL_IDENTIFIER above
            total += session.execute(SimpleStatement(f"SELECT count(*) FROM {keyspace}.{t}"), timeout=10).one()[0]
    except Exception:  # noqa: BLE001 - the count is information, not a verdict
        return None
    return total


# --- batch -------------------------------------------------------------------------------------------------


def run_batch(s: Scratch, app: apps.App, sample: Path, path: Path) -> Result:
    """Run the batch app once on ``sample`` as a job of one file; Refused with the reason when a real job
    would have failed."""
    cfg = s.cfg
    job_id = str(uuid.uuid1())
    work = s.folder / "batch"
    (work / "input").mkdir(parents=True)
    source = work / "input" / f"{job_id}{sample.suffix.lower() or '.csv'}"
    shutil.copyfile(sample, source)  # a regular file of at most 1 MiB in the checked copy
    if os.geteuid() == 0:
        os.chown(source, 0, s.uid)
    source.chmod(0o640)
    out = work / "out"
    outputs.prepare(out, s.uid, cfg.sandbox.max_output_mb << 20)
    spec = contract.batch_run(
        cfg, s.tenant, app, [contract.BatchInput(job_id, source, sample.name, out)], log_path=path, login=s.login
    )
    try:
        r = runtime(cfg).run(_dry(spec, s, "batch"))
        failure = outcome.run_failure(r, stopping=False, cassandra_ok=lambda: _cassandra_answers(s.session))
        verdict = outcome.judge(out, r, failure, shared=False)
    finally:
        outputs.release(out)
    if verdict.status == JobStatus.RETRYING:
        if not _cassandra_answers(s.session):
            raise CassandraUnavailable(f"Cassandra did not answer during the dry run: {verdict.reason}")
        raise Refused(f"{verdict.reason}, while Cassandra answered")
    if verdict.status != JobStatus.SUCCEEDED:
        raise Refused(verdict.reason)
    found = rows_found(s.session, s.name)
    if verdict.rows and found == 0:
        raise Refused(f"the app says it wrote {verdict.rows} rows, but its keyspace holds none")
    seconds = verdict.seconds if verdict.seconds is not None else r.seconds
    rows, rejects = verdict.rows or 0, verdict.rejected or 0
    return Result(rows, rejects, round(seconds, 3), found, _count(sample), path, round(r.seconds, 3))


def _count(sample: Path) -> int:
    """Records in a batch sample: JSON lines are one a line; CSV and TSV have a header line first."""
    if sample.suffix.lower() == ".jsonl":
        with open(sample, "rb") as fh:
            return sum(1 for line in fh if line.strip())
    return max(0, sum(1 for _ in _records(sample)) - 1)


def _records(sample: Path, max_bytes: int | None = None) -> Iterator[bytes | None]:
    """The sample's records (with the header), as the platform's record reader cuts them (mysimbdp-publish
    reads a file with the same reader); None for one larger than ``max_bytes``."""
    with open(sample, "rb") as fh:
        for _line, record in csvrecords.records(fh, csvrecords.delimiter_for(sample.name), max_bytes=max_bytes):
            if record is None or record.strip():
                yield record


# --- stream ------------------------------------------------------------------------------------------------


def run_stream(s: Scratch, app: apps.App, sample: Path, path: Path) -> Result:
    """Put the sample's records in the scratch inbox, run one instance until it has turned them all into rows
    and reported them, then stop it; Refused with the reason when it crashes, reports garbage or takes longer
    than the tenant's time limit for a run."""
    cfg = s.cfg
    records = list(_records(sample, max_bytes=cfg.broker.max_packet_kb << 10))[1:]  # the header line is not sent
    if any(r is None for r in records):
        raise Refused(f"a record of the sample is larger than a message may be ({cfg.broker.max_packet_kb} KiB)")
    if not records:
        raise Refused("the sample holds no records after its header line")
    heads = fill_inbox(s.session, s.name, [r for r in records if r is not None])
    password = credentials.generate_password()
    mosquitto_broker.put_user(
        cfg,
        broker.app_instance_user(s.name, SLOT, credentials.mosquitto_hash(password, cfg.broker.password_iterations)),
    )
    mosquitto_broker.wait_for_login(cfg, broker.instance_user(s.name, SLOT), password)
    spec = _dry(
        contract.stream_run(cfg, s.tenant, app, instance=SLOT, mqtt_password=password, log_path=path, login=s.login),
        s,
        "stream",
    )
    rt = runtime(cfg)
    limit = contract.batch_limits(cfg, s.tenant).timeout or float(cfg.sandbox.timeout)
    interval = float(s.constraints.stream["report_interval_seconds"])
    listener = _Reports(cfg, s.name)
    t0 = time.monotonic()
    try:
        rt.start(spec)
        rows, rejects, seconds = _watch(s, spec, listener, heads, len(records), t0 + limit, interval)
    finally:
        listener.close()
        rt.stop(spec.name, timeout=STOP_SECONDS)  # keeps its log (the spec's mysimbdp.log label)
    whole = time.monotonic() - t0
    found = rows_found(s.session, s.name)
    if rows and found == 0:
        raise Refused(f"the app reported {rows} rows written, but its keyspace holds none")
    return Result(rows, rejects, round(seconds, 3), found, len(records), path, round(whole, 3))


def fill_inbox(session: Session, keyspace: str, records: list[bytes]) -> dict[int, tuple[int, int]]:
    """Write ``records`` into the inbox of ``keyspace`` as the inbox writer does (chunks in the lanes in turn,
    a strictly growing seq per lane, then each lane's row); return each lane's (last seq, records)."""
    keyspace = names.scratch(keyspace)
    chunk_cql = session.prepare(inbox.insert_chunk_cql(keyspace))
    lane_cql = session.prepare(inbox.insert_lane_cql(keyspace))
    heads: dict[int, tuple[int, int]] = {}
    first: dict[int, int] = {}
    seq = time.time_ns() // 1000
    for n, at in enumerate(range(0, len(records), CHUNK_RECORDS)):
        part = records[at : at + CHUNK_RECORDS]
        lane = n % inbox.LANES
        seq += 1
        total = heads.get(lane, (0, 0))[1] + len(part)
        body = b"".join(part)
        sizes = inbox.pack_sizes([len(r) for r in part])
        session.execute(chunk_cql, (lane, inbox.bucket(seq), seq, "dryrun", total, sizes, body))
        heads[lane] = (seq, total)
        first.setdefault(lane, seq)
    for lane, (head, total) in heads.items():
        session.execute(lane_cql, (lane, first[lane], head, total))
    return heads


class _Reports:
    """The instance's reports, read as the stream controller reads them (its broker user, another client
    id), and the lane plan that gives the instance every lane."""

    def __init__(self, cfg: Config, name: str) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.name = name
        self.got: queue.Queue[bytes] = queue.Queue(maxsize=1000)
        subscribed = threading.Event()
        user, password = mosquitto_broker.service_login(cfg)
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"mysimbdp-{name}-{secrets.token_hex(4)}")
        c.username_pw_set(user, password)
        topic = broker.report_topic(name, SLOT)
        c.on_connect = lambda client, u, f, rc, p: rc.is_failure or client.subscribe(topic, qos=1)
        c.on_subscribe = lambda *args: subscribed.set()
        c.on_message = self._on_message
        try:
            c.connect(cfg.broker.host, cfg.broker.port, keepalive=20)
        except OSError as exc:
            raise BrokerUnavailable(f"cannot reach the broker at {cfg.broker.host}:{cfg.broker.port}: {exc}") from None
        c.loop_start()
        self.client = c
        if not subscribed.wait(10):  # the instance's first report must not come before we listen
            self.close()
            raise BrokerUnavailable("the broker did not take the dry run's subscription to the instance's reports")

    def _on_message(self, client, userdata, msg) -> None:
        try:
            self.got.put_nowait(bytes(msg.payload[: outcome.MAX_REPORT_BYTES + 1]))
        except queue.Full:  # a flood: the excess is dropped, as the controller drops it
            pass

    def plan(self) -> None:
        self.client.publish(broker.plan_topic(self.name), json.dumps({"slots": [SLOT], "version": 1}), qos=0)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _watch(
    s: Scratch,
    spec: RunSpec,
    reports: _Reports,
    heads: dict[int, tuple[int, int]],
    records: int,
    deadline: float,
    interval: float,
) -> tuple[int, int, float]:
    """Follow the instance until its offsets reach every lane's head and its reports count the records;
    return (rows, rejects, seconds)."""
    rt = runtime(s.cfg)
    offsets = SimpleStatement(
        f"SELECT lane, seq, total FROM {s.name}.{inbox.OFFSETS_TABLE} WHERE lane IN {inbox.LANES_IN}"
    )
    t0 = time.monotonic()
    first_report = min(deadline, t0 + FIRST_REPORT_SECONDS)
    reported = False
    rows = rejects = 0
    done_at: float | None = None
    next_look = 0.0
    while True:
        now = time.monotonic()
        try:
            payload = reports.got.get(timeout=0.25)
        except queue.Empty:
            payload = None
        if payload is not None:
            try:
                r = outcome.parse_report(s.name, SLOT, payload)
            except TenantError as exc:
                raise Refused(f"its report is not valid: {exc.message}") from None
            reported = True
            rows += r["messages"]
            rejects += r["rejected"]
        if done_at is not None and (rows + rejects >= records or now > done_at + 2 * interval + 2):
            return rows, rejects, done_at - t0
        if now < next_look:
            continue
        next_look = now + 0.5
        state = {c.name: c for c in rt.list(dryrun=s.name)}.get(spec.name)
        if done_at is None and (state is None or state.state not in ("running", "created")):
            code = state.exit_code if state is not None else None
            rt.remove(spec.name)  # keeps its log
            tail = bounded.last_line(spec.log_path)
            what = (
                "was killed: it used more memory than its limit"
                if state is not None and state.oom_killed
                else (f"exited with status {code}")
            )
            raise Refused(f"the app {what} before it had taken in the sample" + (f": {tail}" if tail else ""))
        if not reported:
            if now > first_report:
                raise Refused(f"the app sent no report within {first_report - t0:.0f}s of its start")
            continue
        reports.plan()  # every round, as the controller does: an instance that missed one gets the next
        if done_at is None:
            done = {r.lane: r for r in s.session.execute(offsets, timeout=10)}
            taken = sum(min(done[lane].total or 0, total) for lane, (_, total) in heads.items() if lane in done)
            if all(lane in done and (done[lane].seq or 0) >= seq for lane, (seq, _) in heads.items()):
                done_at = time.monotonic()
            elif now > deadline:
                raise Refused(
                    f"the app did not take in the sample within {deadline - t0:.0f}s (the tenant's time limit for a"
                    f" run): {taken} of {records} records done"
                )
