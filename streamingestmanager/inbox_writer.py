"""The inbox writer: takes every tenant's stream messages off the broker and keeps them in Cassandra.

One platform process, supervised like the controller. It holds one persistent MQTT session subscribed to
every tenant's data topics (``tenants/+/in/+`` and ``tenants/+/batch/+``), so the broker always has a
subscriber and queues for it while it restarts. Every few milliseconds (``stream.inbox_flush_ms``) a
**round**:

1. takes what arrived, groups it per tenant and stream into chunks (:mod:`mysimbdp.inbox`), at most one
   chunk per lane of a tenant, and gives each chunk the next ``seq`` of its lane;
2. writes the chunks, each as one row of the tenant's ``mysimbdp_inbox`` (retried with the same lane and
   seq while Cassandra is away: a write that is repeated is the same row), then each lane's head;
3. only then acknowledges the messages to the broker, tells the tenant's instances (``inbox/<t>/notify``,
   QoS 0: a lost notice only delays them until their next poll), and confirms every envelope to its
   publisher (``confirm/<t>/<publisher>``, QoS 0).

So a message confirmed to ``mysimbdp-publish`` is in Cassandra, whatever process crashes next; one
acknowledged by the broker to any other client is in the broker's memory until the next round. A tenant
whose waiting records pass ``stream.inbox_max_backlog`` gets "full" for what it sends until its instances
catch up; a tenant whose keyspace refuses a write (it dropped its own inbox) loses that chunk alone, with
"refused" to its publisher; one whose keyspace keeps failing while Cassandra answers (it set a replication
factor the cluster cannot meet, while the platform's own keyspace answers) gets "refused" for a while, so that it never holds up the others for more
than a few seconds. While Cassandra is away, chunks are written again until it is back; nothing is
acknowledged meanwhile.
"""

from __future__ import annotations

import collections
import logging
import struct
import sys
import threading
import time
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from cassandra import InvalidRequest, Unauthorized
from cassandra.query import SimpleStatement, ValueSequence
from paho.mqtt.enums import CallbackAPIVersion

from mysimbdp import bounded, broker, daemon, db, inbox, metrics, names
from mysimbdp.config import Config
from mysimbdp.errors import InvalidName
from mysimbdp.services import mosquitto_broker

log = logging.getLogger("streamingestmanager.inbox_writer")
HEARTBEAT = "inbox-writer.heartbeat"
MAX_SEQ_AHEAD_US = 3600 * 1_000_000  # a lane head further in the future than this was not written by us
MAX_WAITING = 20000  # QoS 0 messages taken while this many wait for a round
WRITE_BUDGET = 512 << 10  # bytes of chunks sent before waiting for their answers
RECHECK_SECONDS = 30.0  # a tenant's inbox tables are checked again this often (its role may change them)
TENANT_GRACE = 3.0  # seconds a tenant's chunk may keep failing while Cassandra answers, before it is refused


class _Failed:
    """A write that could not even be sent, as a future that fails."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def result(self):
        raise self.exc


def _wait(future) -> None:
    """Wait for a driver future; its error is read again by the caller."""
    try:
        future.result()
    except Exception:  # noqa: BLE001
        pass


@dataclass
class Arrived:
    mid: int
    tenant: str
    stream: str
    sizes: tuple[int, ...]
    body: bytes
    envelope: inbox.Envelope | None = None
    connection: int = 0  # message ids are per connection: one is acknowledged only on the connection it came on
    qos: int = 1  # QoS 0 (a plain MQTT client's default) is never acknowledged: PUBACK(0) costs the connection


@dataclass
class Chunk:
    tenant: str
    stream: str
    lane: int = 0
    seq: int = 0
    total: int = 0
    items: list[Arrived] = field(default_factory=list)
    records: int = 0
    size: int = 0
    inbox_of: "TenantInbox | None" = None


@dataclass
class TenantInbox:
    """What the writer knows of one tenant's inbox: each lane's latest seq and records written so far."""

    heads: dict[int, tuple[int, int]]
    fresh: set[int]  # lanes that had no row yet (their first chunk sets first_seq)
    next_lane: int = 0
    backlog: int = 0
    backlog_checked: float = 0.0
    statements: dict = field(default_factory=dict)
    checked_at: float = field(default_factory=time.monotonic)  # when its tables were last checked


class InboxWriter:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.stop = threading.Event()
        self.sessions = db.SessionHolder(cfg)
        self.arrived: collections.deque[Arrived] = collections.deque()
        self.wake = threading.Event()
        self.tenants: dict[str, TenantInbox] = {}
        self.complaints = bounded.RateLimit(per_second=1.0, burst=20)
        self.written_records = 0
        self.client: mqtt.Client | None = None
        self.connection = 0
        self.quarantine: dict[str, tuple[float, int]] = {}  # tenant -> (refused until, strikes)
        self.kept_bytes: dict[str, dict[int, int]] = {}  # tenant -> hour -> bytes written to its inbox

    # --- the broker side (paho's thread: only decode and hand over) -----------------------------------------
    def _listen(self) -> mqtt.Client:
        user, password = mosquitto_broker.service_login(self.cfg, broker.INBOX_WRITER_USER)
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=broker.session_client_id("mysimbdp-inbox-writer", password),
            protocol=mqtt.MQTTv311,  # paho decodes 3.1.1 faster; envelopes carry their own numbers
            clean_session=False,  # the broker keeps our subscription and queues for us while we restart
            manual_ack=True,  # a message is acknowledged to the broker once it is in Cassandra
        )
        c.username_pw_set(user, password)
        c.max_inflight_messages_set(1000)
        c.reconnect_delay_set(0.2, 2)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.connect_async(self.cfg.broker.host, self.cfg.broker.port, keepalive=20)
        c.loop_start()
        return c

    def _on_connect(self, client, userdata, flags, rc, props) -> None:
        if rc.is_failure:
            log.error("the broker refused the inbox writer: %s", rc)
            return
        self.connection += 1
        mosquitto_broker.no_delay(client)
        client.subscribe([(f, 1) for f in broker.INBOX_WRITER_FILTERS])
        log.info(
            "subscribed to %s (session kept by the broker: %s)", broker.INBOX_WRITER_FILTERS, flags.session_present
        )

    def _on_message(self, client, userdata, msg) -> None:
        try:
            tenant, is_envelope, stream = broker.parse_data_topic(msg.topic)
            if is_envelope:
                env = inbox.decode_envelope(msg.payload)
                item = Arrived(msg.mid, tenant, stream, env.sizes, env.body, env, self.connection, msg.qos)
            else:
                size = (len(msg.payload),)
                item = Arrived(msg.mid, tenant, stream, size, msg.payload, None, self.connection, msg.qos)
        except (InvalidName, ValueError, UnicodeDecodeError) as exc:
            # only a tenant's own publisher can send here (the broker's ACL): it loses that message alone
            if msg.qos:
                client.ack(msg.mid, msg.qos)
            self._complain("a message on %r was not taken: %s", msg.topic[:200], exc)
            return
        if msg.qos == 0 and len(self.arrived) >= MAX_WAITING:  # QoS 1 is bounded by the broker's in-flight window
            self._complain(
                "a QoS 0 message on %r was dropped: the writer is %d messages behind", msg.topic[:200], MAX_WAITING
            )
            return
        self.arrived.append(item)
        self.wake.set()

    def _complain(self, fmt: str, *args) -> None:
        if self.complaints.allow("all"):
            log.warning(fmt, *args)

    # --- Cassandra ------------------------------------------------------------------------------------------
    def _tenant(self, name: str) -> TenantInbox | None:
        """The tenant's inbox state, its tables made if missing (a tenant created before the inbox existed)."""
        t = self.tenants.get(name)
        if t is not None and time.monotonic() - t.checked_at < RECHECK_SECONDS:
            return t
        s = self.sessions.get()
        ks = names.tenant(name)
        try:
            for cql in inbox.schema(ks, self.cfg.stream.inbox_retention_hours):
                s.execute(cql)
            columns = s.execute(
                "SELECT table_name, column_name, type FROM system_schema.columns WHERE keyspace_name = %s"
                " AND table_name IN %s",
                (ks, ValueSequence(list(inbox.COLUMNS))),
            )
            problem = inbox.schema_problem([(r.table_name, r.column_name, r.type) for r in columns])
            if problem:  # the tenant made its own inbox tables again, differently
                raise InvalidRequest(f"its inbox tables were changed: {problem}")
            rows = s.execute(
                f"SELECT lane, head_seq, head_total FROM {ks}.{inbox.LANES_TABLE} WHERE lane IN {inbox.LANES_IN}"
            )
            statements = {
                "chunk": s.prepare(inbox.insert_chunk_cql(ks)),
                "first": s.prepare(inbox.insert_lane_cql(ks)),
                "head": s.prepare(f"UPDATE {ks}.{inbox.LANES_TABLE} SET head_seq = ?, head_total = ? WHERE lane = ?"),
                # the 16 lanes only: the tenant may have filled its offsets table with other rows
                "offsets": SimpleStatement(
                    f"SELECT lane, total FROM {ks}.{inbox.OFFSETS_TABLE} WHERE lane IN {inbox.LANES_IN}"
                ),
            }
        except (InvalidRequest, Unauthorized) as exc:
            self._complain("the inbox of %s cannot be used: %s", name, exc)
            self.tenants.pop(name, None)
            return None
        heads: dict[int, tuple[int, int]] = dict(t.heads) if t is not None else {}  # ours, when checked again
        horizon = time.time_ns() // 1000 + MAX_SEQ_AHEAD_US
        for r in rows:  # the tenant can write this table: take only what could be ours
            if r.lane is not None and 0 <= r.lane < inbox.LANES and isinstance(r.head_seq, int):
                if 0 < r.head_seq < horizon and isinstance(r.head_total, int) and 0 <= r.head_total < 1 << 62:
                    if r.head_seq > heads.get(r.lane, (0, 0))[0]:
                        heads[r.lane] = (r.head_seq, r.head_total)
        t = TenantInbox(
            heads=heads,
            fresh={lane for lane in range(inbox.LANES) if lane not in heads},
            next_lane=t.next_lane if t is not None else 0,
        )
        t.statements = statements
        self.tenants[name] = t
        return t

    def _backlog(self, name: str, t: TenantInbox) -> int:
        """Records written and not yet turned into rows. The offsets are read in the background every 2 s
        while the tenant sends (never on the round's path); until an answer comes, the last count holds."""
        now = time.monotonic()
        if now - t.backlog_checked < 2.0:
            return t.backlog
        t.backlog_checked = now

        def counted(rows) -> None:
            done: dict[int, int] = {}
            for r in rows:
                if isinstance(r.lane, int) and isinstance(r.total, int) and 0 <= r.total < 1 << 62:
                    done[r.lane] = r.total
            heads = t.heads.copy()  # the round may add a lane meanwhile
            t.backlog = sum(max(0, total - min(done.get(lane, 0), total)) for lane, (_, total) in heads.items())

        try:
            future = self.sessions.get().execute_async(t.statements["offsets"], timeout=5)
            future.add_callbacks(counted, lambda exc: self._complain("cannot read the offsets of %s: %s", name, exc))
        except Exception as exc:  # noqa: BLE001 - the count is advisory: keep the last one
            self._complain("cannot read the offsets of %s: %s", name, exc)
        return t.backlog

    # --- a round ------------------------------------------------------------------------------------------
    def _gather(self) -> tuple[list[Chunk], list[Arrived]]:
        """Chunks for this round (at most one per lane of a tenant), and what is turned away: (item, "full")
        when the tenant's backlog is full, (item, "refused") when its keyspace refuses the inbox."""
        open_chunks: dict[tuple[str, str], Chunk] = {}
        per_tenant: dict[str, int] = collections.Counter()
        chunks: list[Chunk] = []
        full: list[tuple[Arrived, str]] = []
        now_mono = time.monotonic()
        left: list[Arrived] = []
        for _ in range(len(self.arrived)):  # what is there now: a flood never keeps a round from ending
            item = self.arrived.popleft()
            if self.quarantine.get(item.tenant, (0.0, 0))[0] > now_mono:
                full.append((item, "refused"))
                continue
            try:
                t = self._tenant(item.tenant)
            except Exception as exc:  # noqa: BLE001
                if self._cassandra_answers():  # the tenant's alone: refused for a while, the others go on
                    self._quarantine(item.tenant, exc)
                    full.append((item, "refused"))
                    continue
                self.arrived.appendleft(item)  # Cassandra away: this item and the rest wait
                self._complain("cannot open the inbox of %s yet: %s", item.tenant, exc)
                break
            if t is None:  # its keyspace refuses the inbox: not asked again for a few seconds
                self.quarantine[item.tenant] = (now_mono + 5.0, self.quarantine.get(item.tenant, (0.0, 0))[1])
                full.append((item, "refused"))
                continue
            if (
                self._backlog(item.tenant, t) > self.cfg.stream.inbox_max_backlog
                or self._bytes_kept(item.tenant) > self.cfg.stream.inbox_max_mb << 20
            ):
                full.append((item, "full"))
                continue
            key = (item.tenant, item.stream)
            c = open_chunks.get(key)
            n = len(item.sizes)
            if c is not None and (
                c.records + n > inbox.MAX_CHUNK_RECORDS or c.size + len(item.body) > inbox.MAX_CHUNK_BYTES
            ):
                c = None
            if c is None:
                if per_tenant[item.tenant] >= inbox.LANES:  # every lane of this tenant has a chunk: next round
                    left.append(item)
                    continue
                per_tenant[item.tenant] += 1
                c = open_chunks[key] = Chunk(item.tenant, item.stream, inbox_of=t)
                chunks.append(c)
            c.items.append(item)
            c.records += n
            c.size += len(item.body)
        self.arrived.extendleft(reversed(left))
        now = time.time_ns() // 1000
        for c in chunks:
            t = c.inbox_of
            c.lane = t.next_lane
            t.next_lane = (t.next_lane + 1) % inbox.LANES
            seq, total = t.heads.get(c.lane, (0, 0))
            c.seq = max(now, seq + 1)
            c.total = total + c.records
        return chunks, full

    def _write(self, chunks: list[Chunk]) -> list[Chunk]:
        """Write the chunks; return those written. A transient failure is retried (same lane and seq) until it
        succeeds or the writer stops (then nothing of them is acknowledged: the broker delivers them again); a
        tenant's keyspace refusing the write loses that chunk alone."""
        s = self.sessions.get()
        todo = list(chunks)
        done: list[Chunk] = []
        failing: dict[int, float] = {}  # chunk -> when its writes started failing
        delay = 0.1
        while todo and not self.stop.is_set():
            futures = []
            in_flight = 0
            for c in todo:
                if in_flight > WRITE_BUDGET:  # the driver refuses more while its socket buffer is full
                    for _, f in futures:
                        _wait(f)
                    in_flight = 0
                sizes = [n for item in c.items for n in item.sizes]
                body = b"".join(item.body for item in c.items)
                t = c.inbox_of
                values = (c.lane, inbox.bucket(c.seq), c.seq, c.stream, c.total, inbox.pack_sizes(sizes), body)
                try:
                    if t is None:
                        raise InvalidRequest("the tenant's inbox was refused in this round")
                    futures.append((c, s.execute_async(t.statements["chunk"], values)))
                except (InvalidRequest, Unauthorized, TypeError, ValueError, AttributeError, struct.error) as exc:
                    # the tenant changed its own inbox table (the driver binds by the table's columns now)
                    futures.append((c, _Failed(InvalidRequest(f"cannot write to it: {exc}"))))
                in_flight += len(body)
            retry = []
            for c, f in futures:
                try:
                    f.result()
                    done.append(c)
                except (InvalidRequest, Unauthorized) as exc:
                    self._complain("the inbox of %s refused a chunk: %s", c.tenant, exc)
                    self.tenants.pop(c.tenant, None)  # made again (tables checked) on its next message...
                    until, strikes = self.quarantine.get(c.tenant, (0.0, 0))  # ... a few seconds from now
                    self.quarantine[c.tenant] = (max(until, time.monotonic() + 5.0), strikes)
                except Exception as exc:  # noqa: BLE001 - Cassandra away or slow: the same write again
                    since = failing.setdefault(id(c), time.monotonic())
                    if time.monotonic() - since > TENANT_GRACE and self._cassandra_answers():
                        self._quarantine(c.tenant, exc)  # its keyspace alone fails (say, replication 3 on one node)
                    else:
                        self._complain("a chunk of %s is written again: %s", c.tenant, exc)
                        retry.append(c)
            todo = retry
            if todo:
                self.stop.wait(delay)
                delay = min(delay * 2, 2.0)
        heads = []
        for c in done:
            if c.tenant in self.quarantine and self.quarantine[c.tenant][0] <= time.monotonic():
                del self.quarantine[c.tenant]  # written again: forgiven
            t = c.inbox_of
            t.heads[c.lane] = (c.seq, c.total)
            t.backlog += c.records
            self._count_bytes(c.tenant, c.size)
            try:
                if c.lane in t.fresh:  # the lane's row says where a reader starts: retried until written
                    f = s.execute_async(t.statements["first"], (c.lane, c.seq, c.seq, c.total))
                else:
                    f = s.execute_async(t.statements["head"], (c.seq, c.total, c.lane))
                heads.append((t, c.lane, f))
            except Exception as exc:  # noqa: BLE001 - the tenant changed its own lanes table
                self._complain("a lane head of %s was not written: %s", c.tenant, exc)
        for t, lane, f in heads:
            try:
                f.result()
                t.fresh.discard(lane)
            except Exception as exc:  # noqa: BLE001 - the next chunk of the lane writes it again; readers also probe
                self._complain("a lane head was not written: %s", exc)
        return done

    def _settle(self, written: list[Chunk], all_chunks: list[Chunk], full: list[tuple[Arrived, str]]) -> None:
        c = self.client
        confirms: dict[tuple[str, str], dict[str, list[int]]] = collections.defaultdict(
            lambda: collections.defaultdict(list)
        )
        ok = {id(ch) for ch in written}
        for ch in all_chunks:
            status = "ok" if id(ch) in ok else "refused"
            for item in ch.items:
                self._ack(item)
                if item.envelope is not None:
                    confirms[(ch.tenant, item.envelope.publisher)][status].append(item.envelope.first)
            if status == "ok":
                c.publish(broker.notify_topic(ch.tenant), f"{ch.lane} {ch.seq} {ch.total}", qos=0)
                self.written_records += ch.records
                metrics.STREAM_MESSAGES.labels(ch.tenant).inc(ch.records)
                metrics.STREAM_BYTES.labels(ch.tenant).inc(ch.size)
        for item, status in full:
            self._ack(item)
            if item.envelope is not None:
                confirms[(item.tenant, item.envelope.publisher)][status].append(item.envelope.first)
        for (tenant, publisher), by_status in confirms.items():
            lines = "\n".join(f"{status} " + " ".join(map(str, firsts)) for status, firsts in by_status.items())
            c.publish(broker.confirm_topic(tenant, publisher), lines, qos=0)

    def _count_bytes(self, tenant: str, n: int) -> None:
        hours = self.kept_bytes.setdefault(tenant, {})
        hour = int(time.time() // 3600)
        hours[hour] = hours.get(hour, 0) + n
        for old in [h for h in hours if h < hour - self.cfg.stream.inbox_retention_hours]:
            del hours[old]

    def _bytes_kept(self, tenant: str) -> int:
        """What this writer put in the tenant's inbox within the retention window: counted by the writer itself
        (the tenant's own tables could say anything); forgotten when the writer restarts."""
        return sum(self.kept_bytes.get(tenant, {}).values())

    def _cassandra_answers(self) -> bool:
        """Whether the platform's own keyspace answers at the consistency the inbox is written at: then a
        tenant whose writes keep failing has a problem of its own. On a cluster with too few nodes up (two of
        three down) it does not, and every tenant's chunks wait for the nodes instead of being refused."""
        try:
            self.sessions.get().execute(f"SELECT name FROM {self.cfg.keyspace}.tenants LIMIT 1", timeout=2)
            return True
        except Exception:  # noqa: BLE001
            return False

    def _quarantine(self, tenant: str, exc: BaseException) -> None:
        """Cassandra answers but the tenant's keyspace keeps failing: its chunks are refused (not confirmed,
        so mysimbdp-publish keeps them) for 10 s, then 20 s ... up to 5 minutes while that goes on."""
        _, strikes = self.quarantine.get(tenant, (0.0, 0))
        hold = min(10.0 * 2**strikes, 300.0)
        self.quarantine[tenant] = (time.monotonic() + hold, strikes + 1)
        log.warning("the inbox of %s keeps failing (%s): its records are refused for %.0f s", tenant, exc, hold)

    def _ack(self, item: Arrived) -> None:
        """Acknowledge to the broker, on the connection the message came on only (after a reconnect the broker
        delivers it again, and the same id may name another message)."""
        if item.qos and item.connection == self.connection:
            self.client.ack(item.mid, item.qos)

    # --- the loop -------------------------------------------------------------------------------------------
    def run(self) -> None:
        daemon.when_ready(self.stop, self.sessions.get)
        if self.stop.is_set():
            return
        self.client = self._listen()
        heartbeat = self.cfg.paths.run / HEARTBEAT
        flush = self.cfg.stream.inbox_flush_ms / 1000
        log.info("inbox writer ready")
        last_beat = 0.0
        while not self.stop.is_set():
            if time.monotonic() - last_beat > 1:
                daemon.beat(heartbeat)
                last_beat = time.monotonic()
            if not self.arrived:
                self.wake.wait(0.5)
                self.wake.clear()
                continue
            self.stop.wait(flush)  # let a round gather
            try:
                chunks, full = self._gather()
            except Exception:  # noqa: BLE001 - a bug must not become a crash loop on the same messages
                log.exception("gathering a round failed; what arrived waits for the broker to deliver it again")
                self.arrived.clear()
                self.client.disconnect()  # unacknowledged: the persistent session delivers them again
                self.client.loop_stop()
                self.stop.wait(1)
                self.client.reconnect()
                self.client.loop_start()
                continue
            if not chunks and not full:  # Cassandra away: what arrived waits, unacknowledged
                self.stop.wait(0.5)
                continue
            try:
                written = self._write(chunks) if chunks else []
            except Exception:  # noqa: BLE001 - a bug must not become a crash loop on the same messages
                log.exception("a round failed; its records are refused")
                written = []
            if self.stop.is_set() and len(written) < len(chunks):
                break  # not acknowledged: the broker delivers them again to the next writer
            self._settle(written, chunks, full)
        log.info("stopping")
        self.client.disconnect()
        self.client.loop_stop()
        self.sessions.close()


def main(argv: list[str] | None = None) -> int:
    return daemon.run_until_stopped(InboxWriter)


if __name__ == "__main__":
    sys.exit(main())
