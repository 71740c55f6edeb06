"""The life of a stream app instance in one call::

    from mysimbdp_app.stream import run_stream
    raise SystemExit(run_stream(FLIGHTS, fields=[...column order of the CSV lines...]))

What it does, so that no message is ever lost or written twice:

* joins its tenant's shared subscription with a persistent MQTT session (the same client id each time the
  platform starts this slot), QoS 1; the broker's in-flight limit bounds what it holds unacknowledged.
  (MQTT 3.1.1: measured, paho decodes a 3.1.1 PUBLISH noticeably faster than an MQTT 5 one);
* gathers messages (up to 100, or 20 ms from the first), parses each (one CSV line), and writes the rows
  with a prepared statement, grouped per partition in UNLOGGED batches, with bounded concurrency; it
  acknowledges a message only once its row is written; a malformed line is written to the tenant's
  ``rejected_messages`` table instead, then acknowledged, and the stream goes on;
* publishes a timing report every few seconds on its own reports topic;
* on SIGTERM (scale down, stop one) it unsubscribes, finishes and acknowledges what it holds, and ends
  its session; on SIGINT (stop all) it finishes what it holds but keeps its subscription, so that
  messages published meanwhile wait in the broker for the next start. After a crash, the broker delivers
  the unacknowledged messages again when the platform restarts the slot; writes are keyed by primary key,
  so a message delivered twice is still one row.
"""

from __future__ import annotations

import csv
import json
import logging
import signal
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Callable, Sequence

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from . import store
from .context import EXIT_OK, EXIT_TEMPORARY, Context, TemporaryFailure
from .records import Rejected, Table

log = logging.getLogger("mysimbdp_app.stream")
REJECTS_TABLE = (
    "CREATE TABLE IF NOT EXISTS {ks}.rejected_messages (day text, received timeuuid, topic text,"
    " payload text, reason text, instance text, PRIMARY KEY ((day), received))"
    " WITH default_time_to_live = 2592000"
)


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


class StreamInstance:
    def __init__(
        self,
        ctx: Context,
        table: Table,
        fields: Sequence[str],
        *,
        concurrency: int = 32,
        batch_wait: float = 0.02,
        batch_max: int = 100,
        transform: Callable[[tuple], tuple] | None = None,
    ) -> None:
        self.ctx = ctx
        self.table = table
        self.fields = list(fields)
        self.concurrency = concurrency
        self.transform = transform
        self.batch_wait = batch_wait
        self.batch_max = batch_max
        self.inbox: list = []
        self.convert = table.converter(self.fields, columns_of="the stream")
        self.started_at = time.time()
        self.first_message_at: float | None = None
        self.lock = threading.Lock()
        self.inbox_ready = threading.Condition(self.lock)  # one lock for the inbox and the counters
        self.window = _Window()
        self.pending = 0
        self.mode: str | None = None  # None (running) | "leave" | "pause"
        self.stopped = threading.Event()
        self.closing = threading.Event()
        self.subscribed = threading.Event()
        self.unsubscribed = threading.Event()
        self.last_message = time.monotonic()
        self.client_id = ctx.mqtt_client_id or f"mysimbdp-{ctx.tenant}-{ctx.instance}"

    # --- Cassandra ------------------------------------------------------------------------------------
    def _open_store(self) -> None:
        self.session = store.connect(self.ctx, retry_for=120)
        store.execute_with_retry(self.session, self.table.create_cql(self.ctx.keyspace))
        store.execute_with_retry(self.session, REJECTS_TABLE.format(ks=self.ctx.keyspace))
        self.insert = self.session.prepare(self.table.insert_cql(self.ctx.keyspace))
        self.insert_reject = self.session.prepare(
            f"INSERT INTO {self.ctx.keyspace}.rejected_messages (day, received, topic, payload, reason, instance)"
            " VALUES (?, ?, ?, ?, ?, ?)"
        )
        # rows: retried while Cassandra is away (the messages stay unacknowledged meanwhile)
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
            on_written=self._written,
        )
        self.reject_writer = store.Writer(
            self.session, self.insert_reject, concurrency=8, retry_for=3600, on_written=self._written
        )

    # --- MQTT -----------------------------------------------------------------------------------------
    def _client(self, clean: bool) -> mqtt.Client:
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv311,
            clean_session=clean,
            manual_ack=True,
        )
        c.username_pw_set(self.ctx.mqtt_username, self.ctx.mqtt_password)
        return c

    def _open_broker(self) -> None:
        c = self._client(clean=False)  # the session outlives a crash of this instance
        c.max_inflight_messages_set(100)
        c.reconnect_delay_set(0.2, 1)  # back quickly after a broker restart: it must subscribe again
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.on_subscribe = lambda *a: self.subscribed.set()
        c.on_unsubscribe = lambda *a: self.unsubscribed.set()
        c.on_disconnect = lambda cl, u, flags, rc, p: log.info("disconnected from the broker: %s", rc)
        self.mqtt = c
        c.connect_async(self.ctx.mqtt_host, self.ctx.mqtt_port, keepalive=20)
        c.loop_start()

    def _end_session(self) -> None:
        """Connect once with a clean session: the broker forgets this slot's session."""
        c = self._client(clean=True)
        try:
            c.connect(self.ctx.mqtt_host, self.ctx.mqtt_port, keepalive=10)
            c.loop_start()
            time.sleep(0.2)
            c.disconnect()
            c.loop_stop()
        except OSError as exc:
            log.warning("could not end the session: %s", exc)

    def _on_connect(self, client, userdata, flags, rc, props) -> None:
        if rc.is_failure:
            log.error("the broker refused this instance: %s", rc)
            return
        if self.mode is None:  # (re)subscribe; harmless when the session already has it
            client.subscribe(self.ctx.subscription, qos=1)

    def _on_message(self, client, userdata, msg) -> None:
        """On the MQTT thread: only hand the message over."""
        if self.mode == "pause":  # not taken: it stays in the session, for the next start
            return
        if msg.retain:  # a retained message replayed to a new subscription: it was ingested when it came
            client.ack(msg.mid, msg.qos)
            return
        now = time.monotonic()
        self.last_message = now
        if self.first_message_at is None:
            self.first_message_at = time.time()
        with self.inbox_ready:
            self.inbox.append((msg, now))
            self.pending += 1
            if len(self.inbox) == 1 or len(self.inbox) == self.batch_max:
                self.inbox_ready.notify()

    def _work(self) -> None:
        """Take what arrived (up to ``batch_max`` messages or ``batch_wait`` seconds), convert it, write it."""
        while True:
            with self.inbox_ready:
                while not self.inbox and not self.closing.is_set():
                    self.inbox_ready.wait(0.1)
                if not self.inbox and self.closing.is_set():
                    return
                deadline = time.monotonic() + self.batch_wait  # let a batch gather
                while len(self.inbox) < self.batch_max and not self.closing.is_set():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self.inbox_ready.wait(left)
                taken, self.inbox = self.inbox, []
            for msg, received in taken:
                self._handle(msg, received)
            self.writer.flush()
            self.reject_writer.flush()

    def _handle(self, msg, received: float) -> None:
        tag = (msg.mid, received, len(msg.payload), True)
        try:
            line = msg.payload.decode("utf-8")
            fields = next(csv.reader((line.rstrip("\r\n"),)))
            values = self.convert(fields)
            if self.transform is not None:
                values = self.transform(values)
            self.writer.add(values, tag)
        except (Rejected, ValueError, UnicodeDecodeError, csv.Error, StopIteration) as exc:
            reason = "not valid UTF-8" if isinstance(exc, UnicodeDecodeError) else str(exc) or "empty message"
            day = datetime.now(timezone.utc).strftime("%Y-%m-%d")
            payload = msg.payload.decode("utf-8", "replace")[:10000]
            self.reject_writer.add(
                (day, uuid.uuid1(), msg.topic, payload, reason, self.ctx.instance),
                (msg.mid, received, len(msg.payload), False),
            )
        except TemporaryFailure:
            with self.lock:
                self.window.errors += 1
                self.pending -= 1

    def _written(self, _n: int, tag) -> None:
        mid, t_recv, size, good = tag
        self.mqtt.ack(mid, 1)
        lat = time.monotonic() - t_recv
        with self.lock:
            self.pending -= 1
            w = self.window
            if good:
                w.messages += 1
                w.bytes += size
                w.latencies.append(lat)
            else:
                w.rejected += 1

    # --- reports --------------------------------------------------------------------------------------
    def _report(self) -> None:
        with self.lock:
            w, self.window = self.window, _Window()
            pending = self.pending
        body = w.report(self.ctx.tenant, self.ctx.instance, pending, self.started_at, self.first_message_at)
        self.mqtt.publish(self.ctx.report_topic, json.dumps(body), qos=1)

    # --- the loop ---------------------------------------------------------------------------------------
    def run(self) -> int:
        signal.signal(signal.SIGTERM, lambda *_: self._stop("leave"))
        signal.signal(signal.SIGINT, lambda *_: self._stop("pause"))
        try:
            self._open_store()
        except TemporaryFailure as exc:
            print(f"Cassandra unavailable: {exc}", file=sys.stderr)
            return EXIT_TEMPORARY
        self.worker = threading.Thread(target=self._work, daemon=True)
        self.worker.start()
        self._open_broker()
        print(f"instance {self.ctx.instance} of {self.ctx.tenant} consuming {self.ctx.subscription}", flush=True)
        next_report = time.monotonic() + self.ctx.report_interval
        announced = False
        while not self.stopped.wait(0.05):
            if not announced and self.subscribed.is_set():
                self._report()  # the first report says: subscribed, consuming
                announced = True
            if time.monotonic() >= next_report:
                if announced:  # no report before the subscription is granted
                    self._report()
                next_report += self.ctx.report_interval
        self._drain()
        return EXIT_OK

    def _stop(self, mode: str) -> None:
        if self.mode is None:
            self.mode = mode
            self.stopped.set()

    def _drain(self) -> None:
        if self.mode == "leave":
            self.unsubscribed.clear()
            self.mqtt.unsubscribe(self.ctx.subscription)
            self.unsubscribed.wait(5)
            # what the broker had queued for this session still arrives; take it all
            while time.monotonic() - self.last_message < 1.0:
                time.sleep(0.1)
        self.closing.set()
        self.worker.join(30)
        try:
            self.writer.wait()
            self.reject_writer.wait()
        except TemporaryFailure:
            pass  # unacknowledged messages stay with the broker
        deadline = time.monotonic() + 10
        while self.pending > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        self._report()
        time.sleep(0.2)
        self.mqtt.disconnect()
        self.mqtt.loop_stop()
        if self.mode == "leave" and self.pending == 0:
            self._end_session()
        self.session.cluster.shutdown()
        print(f"instance {self.ctx.instance} stopped ({'left' if self.mode == 'leave' else 'paused'})", flush=True)


def run_stream(table: Table, fields: Sequence[str], **kw) -> int:
    """Run one instance of a stream app until the platform stops it; return the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout)
    return StreamInstance(Context.from_env(), table, fields, **kw).run()
