"""The life of a stream app instance in one call::

    from mysimbdp_app.stream import run_stream
    raise SystemExit(run_stream(FLIGHTS, fields=[...column order of the CSV lines...]))

Where the messages come from: the platform's inbox writer keeps every message of the tenant, as it
arrives, in the tenant's own keyspace (``mysimbdp_inbox``: chunks of records in 16 lanes, docs/streaming.md).
An instance reads the lanes the platform gives it (``inbox/<tenant>/plan``), and what it does, so that no
message is ever lost or written twice:

* wakes up when the platform says a chunk was written in one of its lanes (``inbox/<tenant>/notify``), and
  at least every second, and reads the chunks after the last one done in each of its lanes;
* parses each record (one CSV line), writes the rows with a prepared statement, grouped in UNLOGGED
  batches, with bounded concurrency; a malformed record goes to the tenant's ``rejected_messages`` table
  instead (keyed by its place in the inbox, so doing a chunk twice writes it once), and the stream goes on;
* once every row of a round is written, records in ``mysimbdp_inbox_offsets`` the last chunk done in each
  lane. A crash before that only makes the next owner of the lane do those chunks again: rows are keyed by
  primary key, so a record done twice is still one row;
* publishes a timing report every few seconds on its own reports topic: rows written, the time from the
  platform's inbox to the row, and the records waiting in its lanes;
* on SIGTERM or SIGINT it finishes the round in hand, records its offsets and exits; what is left waits in
  the inbox for the next instance.
"""

from __future__ import annotations

import csv
import json
import logging
import signal
import socket
import sys
import threading
import time
from array import array
from datetime import datetime, timezone
from typing import Callable, Sequence

import paho.mqtt.client as mqtt
from cassandra.util import uuid_from_time
from paho.mqtt.enums import CallbackAPIVersion

from . import store
from .context import EXIT_FAILED, EXIT_OK, EXIT_TEMPORARY, Context, TemporaryFailure
from .records import Rejected, Table

log = logging.getLogger("mysimbdp_app.stream")
REJECTS_TABLE = (
    "CREATE TABLE IF NOT EXISTS {ks}.rejected_messages (day text, received timeuuid, topic text,"
    " payload text, reason text, instance text, PRIMARY KEY ((day), received))"
    " WITH default_time_to_live = 2592000"
)
# the inbox, as mysimbdp/inbox.py defines it (the platform's side; this library is the tenant's)
LANES = 16
BUCKET_US = 3600 * 1_000_000
CHUNKS_PER_LANE = 4  # read per lane and round
ROUND_RECORDS = 20000  # a round stops reading once it holds this many records
PROBE_SECONDS = 5.0  # how often every lane is looked at, whatever its head says


def split_chunk(sizes_blob: bytes, body: bytes) -> list[bytes]:
    """The records of an inbox chunk; ValueError if it does not add up. A copy of mysimbdp/inbox.py:split_chunk
    on purpose: this library runs in the sandbox without the platform's package; tests/test_inbox_format.py
    checks that the two agree."""
    if len(sizes_blob) % 4 or len(sizes_blob) > 4 * 4096:
        raise ValueError("bad chunk sizes")
    sizes = array("I")
    sizes.frombytes(sizes_blob)
    if sum(sizes) != len(body):
        raise ValueError("chunk sizes do not match its body")
    out, at = [], 0
    for n in sizes:
        out.append(body[at : at + n])
        at += n
    return out


class _Window:
    """Timings of one report window."""

    def __init__(self) -> None:
        self.start = time.time()
        self.messages = 0
        self.bytes = 0
        self.errors = 0
        self.rejected = 0
        self.latencies: list[float] = []

    def report(
        self, tenant: str, instance: str, pending: int, started_at: float, first_message_at: float | None
    ) -> dict:
        lat = sorted(self.latencies)
        n = len(lat)
        return {
            "tenant": tenant,
            "instance": instance,
            "window_start": self.start,
            "window_end": time.time(),
            "messages": self.messages,
            "bytes": self.bytes,
            "errors": self.errors,
            "rejected": self.rejected,
            "avg_ms": round(sum(lat) / n * 1000, 3) if n else 0.0,
            "p95_ms": round(lat[min(n - 1, int(n * 0.95))] * 1000, 3) if n else 0.0,
            "pending": pending,
            "started_at": started_at,
            "first_message_at": first_message_at,
        }


def _sane_seq(seq: object) -> bool:
    """A chunk's seq the platform could have written: microseconds since the epoch, not in the future (an
    hour of clock skew allowed). The lanes and offsets tables are the tenant's own: anything else is ignored."""
    return isinstance(seq, int) and 0 < seq < (time.time() + 3600) * 1e6


def _sane_total(total: object) -> bool:
    return isinstance(total, int) and 0 <= total < 1 << 62


def _ints(text: str, n: int) -> list[int] | None:
    parts = text.split()
    if len(parts) != n or not all(p.isdigit() and len(p) <= 19 for p in parts):
        return None
    return [int(p) for p in parts]


class StreamInstance:
    def __init__(
        self,
        ctx: Context,
        table: Table,
        fields: Sequence[str],
        *,
        concurrency: int = 32,
        transform: Callable[[tuple], tuple] | None = None,
        **_old_options,  # batch_wait, batch_max: how an instance gathered MQTT messages before the inbox
    ) -> None:
        self.ctx = ctx
        self.table = table
        self.fields = list(fields)
        self.concurrency = concurrency
        self.transform = transform
        self.convert = table.converter(self.fields, columns_of="the stream")
        self.started_at = time.time()
        self.first_message_at: float | None = None
        self.lock = threading.Lock()
        self.window = _Window()
        self.wake = threading.Event()
        self.stopped = threading.Event()
        self.subscribed = threading.Event()
        self.plan: list[str] = []
        self.plan_version = -1
        self.heads: dict[int, tuple[int, int]] = {}  # lane -> (seq, total) written by the platform
        self.first: dict[int, int] = {}  # lane -> its first chunk's seq
        self.done: dict[int, tuple[int, int]] = {}  # lane -> (seq, total) turned into rows
        self.owned: set[int] = set()
        self.client_id = ctx.mqtt_client_id or f"mysimbdp-{ctx.tenant}-{ctx.instance}"

    # --- Cassandra ------------------------------------------------------------------------------------
    def _open_store(self) -> None:
        self.session = store.connect(self.ctx, retry_for=120)
        ks = self.ctx.keyspace
        store.execute_with_retry(self.session, self.table.create_cql(ks))
        store.execute_with_retry(self.session, REJECTS_TABLE.format(ks=ks))
        self.insert = self.session.prepare(self.table.insert_cql(ks))
        self.insert_reject = self.session.prepare(
            f"INSERT INTO {ks}.rejected_messages (day, received, topic, payload, reason, instance)"
            " VALUES (?, ?, ?, ?, ?, ?)"
        )
        self.read_chunks = self.session.prepare(
            f"SELECT seq, stream, total, sizes, body FROM {ks}.mysimbdp_inbox"
            " WHERE lane = ? AND bucket = ? AND seq > ? LIMIT ?"
        )
        self.read_lanes = self.session.prepare(
            f"SELECT lane, first_seq, head_seq, head_total FROM {ks}.mysimbdp_inbox_lanes"
        )
        self.read_offsets = self.session.prepare(f"SELECT lane, seq, total FROM {ks}.mysimbdp_inbox_offsets")
        self.write_offset = self.session.prepare(
            f"INSERT INTO {ks}.mysimbdp_inbox_offsets (lane, seq, total) VALUES (?, ?, ?)"
        )
        # Rows of one replica set travel in one batch: on a single node that is every row (one request for all
        # that arrived in the last milliseconds); on a cluster, the rows of one partition.
        single_node = len(self.session.cluster.metadata.all_hosts()) == 1
        group = (lambda values: 0) if single_node else self.table.partition_of
        self.writer = store.Writer(
            self.session,
            self.insert,
            concurrency=self.concurrency,
            retry_for=3600,
            partition_of=group,
            batch_rows=100,
        )
        self.reject_writer = store.Writer(self.session, self.insert_reject, concurrency=8, retry_for=3600)

    # --- MQTT: the platform's notices in, reports out -------------------------------------------------
    def _open_broker(self) -> None:
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv311, clean_session=True
        )
        c.username_pw_set(self.ctx.mqtt_username, self.ctx.mqtt_password)
        c.reconnect_delay_set(0.2, 2)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.on_subscribe = lambda *a: self.subscribed.set()
        c.on_disconnect = lambda cl, u, flags, rc, p: log.info("disconnected from the broker: %s", rc)
        self.mqtt = c
        c.connect_async(self.ctx.mqtt_host, self.ctx.mqtt_port, keepalive=20)
        c.loop_start()

    def _on_connect(self, client, userdata, flags, rc, props) -> None:
        if rc.is_failure:
            log.error("the broker refused this instance: %s", rc)
            return
        sock = client.socket()  # the platform's notices come at once (paho leaves Nagle's algorithm on)
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.subscribe(self.ctx.subscription, qos=0)

    def _on_message(self, client, userdata, msg) -> None:
        """On the MQTT thread: note what the platform says and wake the worker."""
        try:
            text = msg.payload[:4096].decode("ascii")
        except UnicodeDecodeError:
            return
        if msg.topic.endswith("/notify"):
            got = _ints(text, 3)
            if got and 0 <= got[0] < LANES and _sane_seq(got[1]) and _sane_total(got[2]):
                lane, seq, total = got
                with self.lock:
                    if seq > self.heads.get(lane, (0, 0))[0]:
                        self.heads[lane] = (seq, total)
                if lane in self.owned:
                    self.wake.set()
        elif msg.topic.endswith("/plan"):
            try:
                plan = json.loads(text)
                slots = [str(s) for s in plan["slots"]][:LANES]
                version = int(plan["version"])
            except (ValueError, KeyError, TypeError):
                return
            with self.lock:
                if version != self.plan_version or slots != self.plan:
                    self.plan, self.plan_version = slots, version
                    self.wake.set()

    # --- the inbox ------------------------------------------------------------------------------------
    def _lanes_of_plan(self) -> set[int]:
        with self.lock:
            plan = list(self.plan)
        if self.ctx.instance not in plan:
            return set()
        return {lane for lane in range(LANES) if plan[lane % len(plan)] == self.ctx.instance}

    def _read_heads(self) -> None:
        for r in store.execute_with_retry(self.session, self.read_lanes, retry_for=60):
            if not (isinstance(r.lane, int) and 0 <= r.lane < LANES):
                continue
            if _sane_seq(r.head_seq) and _sane_total(r.head_total):
                with self.lock:
                    if r.head_seq > self.heads.get(r.lane, (0, 0))[0]:
                        self.heads[r.lane] = (r.head_seq, r.head_total)
            if _sane_seq(r.first_seq):
                self.first[r.lane] = r.first_seq

    def _poll(self) -> None:
        """Read the lanes' heads, and the offsets of lanes newly ours (another instance may have done more)."""
        owned = self._lanes_of_plan()
        self._read_heads()
        new = owned - self.owned
        if new:
            for r in store.execute_with_retry(self.session, self.read_offsets, retry_for=60):
                if r.lane in new and _sane_seq(r.seq) and _sane_total(r.total):
                    old = self.done.get(r.lane, (0, 0))
                    if r.seq > old[0]:
                        self.done[r.lane] = (r.seq, r.total)
            log.info("lanes now read by this instance: %s", sorted(owned))
        self.owned = owned

    def _fetch(self, lane: int, probe: bool = False) -> tuple[list, tuple[int, int]]:
        """The next chunks of ``lane`` after the last one done, across hour buckets up to the head's (never
        further back than the inbox keeps chunks), and the head that was scanned up to. A ``probe`` looks in
        the last two hours whatever the head says (a chunk whose head and notice were both lost)."""
        after = self.done.get(lane, (0, 0))[0]
        if not after and lane not in self.first:
            self._read_heads()  # the lane's first chunk: its row in the lanes table follows the chunk at once
        with self.lock:
            head = self.heads.get(lane, (0, 0))
        now_bucket = int(time.time() * 1e6) // BUCKET_US
        last = max(head[0] // BUCKET_US, now_bucket) if probe else head[0] // BUCKET_US
        if probe:
            b = max(after // BUCKET_US, now_bucket - 1)
        elif after:
            b = after // BUCKET_US
        elif lane in self.first:
            b = self.first[lane] // BUCKET_US
        else:  # no row for the lane (the tenant deleted it?): as far back as the inbox keeps chunks
            b = 0
        b = max(b, last - self.ctx.inbox_retention_hours - 1)
        while b <= last:
            rows = list(store.execute_with_retry(self.session, self.read_chunks, (lane, b, after, CHUNKS_PER_LANE)))
            if rows:
                return rows, head
            b += 1
        return [], head

    def _round(self, lanes: list[int], probe: bool = False) -> int:
        """Turn the next chunks of ``lanes`` into rows; record the offsets; return the records done."""
        got: list[tuple[int, object]] = []
        records = 0
        for lane in lanes:
            rows, (seq, total) = self._fetch(lane, probe)
            done_seq, done_total = self.done.get(lane, (0, 0))
            if not rows and not probe and seq > done_seq:
                # the head this scan went up to is past every chunk there is: they expired (or the tenant
                # deleted them). Only as far as that head: a chunk written since is read next time.
                with self.lock:
                    self.done[lane] = (seq, total)
                log.warning(
                    "lane %d: %d records expired from the inbox before they were read", lane, total - done_total
                )
                store.execute_with_retry(self.session, self.write_offset, (lane, seq, total))
            for row in rows:
                got.append((lane, row))
                records += max(0, len(row.sizes or b"") // 4)  # 4 bytes of size per record
            if records >= ROUND_RECORDS:
                break
        if not got:
            return 0
        if self.first_message_at is None:
            self.first_message_at = time.time()
        good = bad = size = 0
        latencies = []
        last: dict[int, tuple[int, int]] = {}
        for lane, row in got:
            try:
                items = split_chunk(row.sizes or b"", row.body or b"")
            except (ValueError, TypeError) as exc:  # the tenant's own table: a chunk (or a table) it made itself
                log.warning("chunk %s of lane %d skipped: %s", row.seq, lane, exc)
                items = []
            arrived = row.seq / 1e6
            for i, payload in enumerate(items):
                try:
                    self._handle(payload)
                    good += 1
                    size += len(payload)
                except (Rejected, ValueError, UnicodeDecodeError, csv.Error, StopIteration) as exc:
                    reason = "not valid UTF-8" if isinstance(exc, UnicodeDecodeError) else str(exc) or "empty message"
                    text = payload.decode("utf-8", "replace")[:10000]
                    key = uuid_from_time(arrived, node=lane, clock_seq=i)  # its place in the inbox, and its day:
                    day = datetime.fromtimestamp(arrived, timezone.utc).strftime("%Y-%m-%d")  # done twice, one row
                    topic = f"tenants/{self.ctx.tenant}/{row.stream}"
                    self.reject_writer.add((day, key, topic, text, reason, self.ctx.instance))
                    bad += 1
            last[lane] = (row.seq, row.total or 0)
        self.writer.flush()
        self.writer.wait()
        self.reject_writer.wait()
        now = time.time()
        for _lane, row in got:
            latencies.append(max(0.0, now - row.seq / 1e6))
        futures = [
            self.session.execute_async(self.write_offset, (lane, seq, total)) for lane, (seq, total) in last.items()
        ]
        for f in futures:
            f.result()
        with self.lock:
            for lane, done in last.items():
                self.done[lane] = done
            w = self.window
            w.messages += good
            w.rejected += bad
            w.bytes += size
            # the time from the inbox to the row, for each record (a chunk's records share their chunk's time)
            for (_lane, row), lat in zip(got, latencies):
                w.latencies.extend([lat] * max(1, len(row.sizes or b"") // 4))
        return good + bad

    def _handle(self, payload: bytes) -> None:
        line = payload.decode("utf-8")
        fields = next(csv.reader((line.rstrip("\r\n"),)))
        values = self.convert(fields)
        if self.transform is not None:
            values = self.transform(values)
        self.writer.add(values)

    def pending(self) -> int:
        """Records waiting in this instance's lanes."""
        with self.lock:
            return sum(max(0, self.heads.get(lane, (0, 0))[1] - self.done.get(lane, (0, 0))[1]) for lane in self.owned)

    def _work(self) -> None:
        last_poll = last_probe = 0.0
        start = 0
        while not self.stopped.is_set():
            if time.monotonic() - last_poll >= 1.0 or self._lanes_of_plan() != self.owned:
                self._poll()
                last_poll = time.monotonic()
            if time.monotonic() - last_probe >= PROBE_SECONDS:  # chunks no head or notice told of
                last_probe = time.monotonic()
                self._round(sorted(self.owned), probe=True)
            with self.lock:
                lanes = [
                    lane
                    for lane in sorted(self.owned)
                    if self.heads.get(lane, (0, 0))[0] > self.done.get(lane, (0, 0))[0]
                ]
            start += 1  # each round begins at another lane: under load none waits for the others
            lanes = lanes[start % len(lanes) :] + lanes[: start % len(lanes)] if lanes else lanes
            if lanes and self._round(lanes):
                continue
            self.wake.wait(1.0)
            self.wake.clear()

    # --- reports --------------------------------------------------------------------------------------
    def _report(self) -> None:
        pending = self.pending()
        with self.lock:
            w, self.window = self.window, _Window()
        body = w.report(self.ctx.tenant, self.ctx.instance, pending, self.started_at, self.first_message_at)
        self.mqtt.publish(self.ctx.report_topic, json.dumps(body), qos=1)

    # --- the loop ---------------------------------------------------------------------------------------
    def run(self) -> int:
        signal.signal(signal.SIGTERM, lambda *_: self.stopped.set())
        signal.signal(signal.SIGINT, lambda *_: self.stopped.set())
        try:
            self._open_store()
        except TemporaryFailure as exc:
            print(f"Cassandra unavailable: {exc}", file=sys.stderr)
            return EXIT_TEMPORARY
        self._open_broker()
        failure: list[BaseException] = []

        def work() -> None:
            try:
                self._work()
            except TemporaryFailure as exc:  # Cassandra away for an hour: the platform starts us again later
                failure.append(exc)
                self.stopped.set()
            except Exception as exc:  # noqa: BLE001 - never a live-looking instance that reads nothing
                log.exception("the worker failed; this instance ends (the platform starts it again)")
                failure.append(exc)
                self.stopped.set()

        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        print(f"instance {self.ctx.instance} of {self.ctx.tenant} reading its inbox", flush=True)
        next_report = time.monotonic() + self.ctx.report_interval
        announced = False
        while not self.stopped.wait(0.05):
            if not announced and self.subscribed.is_set():
                self._report()  # the first report says: listening, consuming
                announced = True
            if time.monotonic() >= next_report:
                if announced:
                    self._report()
                next_report += self.ctx.report_interval
        self.wake.set()
        worker.join(self.ctx.report_interval + 60)  # the round in hand ends with its offsets
        self._report()
        time.sleep(0.2)
        self.mqtt.disconnect()
        self.mqtt.loop_stop()
        self.session.cluster.shutdown()
        if failure:
            print(f"stopped: {failure[0]}", file=sys.stderr)
            return EXIT_TEMPORARY if isinstance(failure[0], TemporaryFailure) else EXIT_FAILED
        print(f"instance {self.ctx.instance} stopped", flush=True)
        return EXIT_OK


def run_stream(table: Table, fields: Sequence[str], **kw) -> int:
    """Run one instance of a stream app until the platform stops it; return the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout)
    return StreamInstance(Context.from_env(), table, fields, **kw).run()
