"""Publishing records over MQTT so that each one counts only once it is safe in Cassandra.

Records go several to a message (an envelope, :mod:`.envelope`), at QoS 1, to
``tenants/<user>/batch/<stream>``. The platform's inbox writer confirms an envelope on
``confirm/<user>/<publisher id>`` once its records are in the tenant's inbox in Cassandra; only then do
they count as confirmed, and from then on each becomes exactly one row whatever single process crashes.
What is not confirmed in time (a broker or writer crash lost it) is sent again with the same numbers: a
record that arrives twice is still one row. When nothing is confirmed for ``max_outage`` seconds the
publisher gives up (:class:`GaveUp`); ``mark`` says how many records from the start are confirmed, which a
:class:`Checkpoint` keeps so that a later run sends only the rest.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import re
import secrets
import socket
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from . import envelope
from .errors import AuthenticationError, BadRequestError, CheckpointError, GaveUp, TransportError
from .records import delimiter_for
from .records import records as read_records

MAX_PACKET = 256 << 10  # the platform broker's max_packet_size (broker.max_packet_kb); MQTT 5 says it on connect
MAX_PAYLOAD = MAX_PACKET - 1024  # room for the topic and the packet's header
TENANT = re.compile(r"[a-z][a-z0-9_]{2,31}")
STREAM = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
Records = Iterable[tuple[int, bytes | None]]  # (the record's first line number, its bytes; None: too large)


def batch_topic(user: str, stream: str = "default") -> str:
    """Where envelopes of ``user``'s ``stream`` go (the platform's ``mysimbdp.broker.batch_topic``)."""
    if not TENANT.fullmatch(user):
        raise BadRequestError(f"invalid tenant name {user[:40]!r}", code="invalid_name")
    if not STREAM.fullmatch(stream):
        raise BadRequestError(
            f"invalid stream name {stream[:70]!r}", code="invalid_name", hint="1-64 letters, digits, '_', '.', '-'"
        )
    return f"tenants/{user}/batch/{stream}"


def file_records(path: Path, skip_header: bool, max_payload: int = MAX_PAYLOAD) -> Iterator[tuple[int, bytes | None]]:
    """(first line number, whole CSV record without its line end) of a file; a record larger than one message
    may hold comes as None (and is not kept in memory: a quote left open can make the rest of a file one
    record). Blank records are left out; the header too when ``skip_header``."""
    with open(path, "rb") as fh:
        for n, (line, record) in enumerate(read_records(fh, delimiter_for(path.name), max_bytes=max_payload)):
            if n == 0 and skip_header:
                continue
            if record is None or record.strip():
                yield line, record


def _no_delay(client: mqtt.Client) -> None:
    """Small MQTT packets go at once (paho leaves Nagle's algorithm on: a confirmation could wait up to 40 ms
    for the last packet's TCP acknowledgement). A copy of mysimbdp/services/mosquitto_broker.py:no_delay: the
    SDK installs without the platform's package."""
    sock = client.socket()
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


@dataclass
class _Sent:
    payload: bytes
    count: int
    last_line: int  # the file line number of its last record (for the message when giving up)
    sent_at: float = 0.0
    full_since: float | None = None


@dataclass
class Published:
    """What became of a publisher's records so far."""

    sent: int  # records sent (each once, however often its envelope was sent again)
    confirmed: int  # records the platform confirmed: safe in Cassandra
    mark: int  # every record numbered below this is confirmed (or too large to send): where to resume
    resent: int = 0  # envelopes sent again (not confirmed in time: a broker or platform restart?)
    full: int = 0  # records not kept: the stream's backlog stayed full for ``wait_for_room`` seconds
    refused: int = 0  # records not kept: the platform could not write to the keyspace
    too_large: list[int] = field(default_factory=list)  # line numbers of records larger than one message
    long_records: list[int] = field(default_factory=list)  # line numbers of records spanning > 1,000 lines
    records_read: int = 0  # records read from the input, those skipped as already confirmed included
    max_payload: int = MAX_PAYLOAD

    @property
    def all_confirmed(self) -> bool:
        return self.confirmed == self.sent and not self.too_large


class Publisher:
    """One connection to the broker as a tenant, publishing numbered records to one stream.

    ``first_record`` is the number of the first record to send (records before it were confirmed by an
    earlier run). The MQTT thread only queues what it hears; the publishing thread does the bookkeeping.
    Raises AuthenticationError for a wrong user name or password, TransportError when the broker does not
    answer within ``min(max_outage, 10)`` seconds."""

    def __init__(
        self,
        host: str,
        port: int,
        user: str,
        password: str,
        *,
        stream: str = "default",
        qos: int = 1,
        window: int = 64,
        confirm_timeout: float = 10.0,
        max_outage: float = 60.0,
        wait_for_room: float = 30.0,
        first_record: int = 0,
    ) -> None:
        self.user = user
        self.topic = batch_topic(user, stream)
        self.qos = qos
        self.id = secrets.token_hex(8)
        self.sent = self.confirmed = self.refused = self.full = self.resent = 0
        self.window = window
        self.confirm_timeout = confirm_timeout
        self.max_outage = max_outage
        self.wait_for_room = wait_for_room
        self.outstanding: dict[int, _Sent] = {}  # first record number -> envelope, in sending order
        self.order: collections.deque[tuple[int, int]] = collections.deque()  # (first, count) not yet below the mark
        self.done: set[int] = set()  # firsts settled (confirmed, or given up) above the mark
        self.first_record = first_record
        self.mark = first_record  # every record numbered below this is confirmed (or too large to send)
        self.too_large: list[int] = []
        self.long_records: list[int] = []
        self.records_read = 0
        self.heard: collections.deque = collections.deque()  # (status, first) from the MQTT thread
        self.connected = threading.Event()
        self.connected_at = 0.0  # the last (re)connection: what was sent before it is sent again
        self.connack = None
        self.last_progress = time.monotonic()
        self.max_payload = MAX_PAYLOAD
        self.confirm_topic = f"confirm/{user}/{self.id}"
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv5)
        c.username_pw_set(user, password)
        c.max_inflight_messages_set(window)
        c.reconnect_delay_set(0.2, 2)
        c.on_connect = self._on_connect
        c.on_disconnect = lambda *a: self.connected.clear()
        c.on_message = self._on_message
        self.client = c
        deadline = time.monotonic() + min(max_outage, 10.0)  # a broker restarting right now is back in seconds
        while True:
            try:
                c.connect(host, port, keepalive=15)
                break
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise TransportError(
                        f"cannot reach the broker at {host}:{port}: {exc.strerror or exc}",
                        code="broker_unavailable",
                        hint="is the platform running?",
                    ) from None
                time.sleep(0.5)
        c.loop_start()
        deadline = time.monotonic() + 10
        while self.connack is None and time.monotonic() < deadline:
            time.sleep(0.01)
        if self.connack is None:
            c.loop_stop()
            raise TransportError(f"the broker at {host}:{port} did not answer", code="broker_unavailable")
        if self.connack.is_failure:
            c.loop_stop()
            if self.connack.value in (134, 135, 4, 5):  # bad user name or password / not authorized
                raise AuthenticationError("wrong user name or password", code="unauthorized")
            raise TransportError(f"the broker refused the connection: {self.connack}", code="broker_unavailable")
        if not self.connected.wait(10):
            c.loop_stop()
            raise TransportError("the broker did not grant the confirmation subscription", code="broker_unavailable")

    def _on_connect(self, client, userdata, flags, rc, props) -> None:
        packet = getattr(props, "MaximumPacketSize", None) if props is not None else None
        if isinstance(packet, int) and packet > 2048:  # the broker's own bound, when it says it
            self.max_payload = min(self.max_payload, packet - 1024)
        self.connack = rc
        if not rc.is_failure:
            _no_delay(client)
            client.subscribe(self.confirm_topic, qos=0)
            client.on_subscribe = lambda *a: (setattr(self, "connected_at", time.monotonic()), self.connected.set())

    def _on_message(self, client, userdata, msg) -> None:
        for line in msg.payload[: 1 << 20].decode("ascii", "replace").splitlines():
            status, *firsts = line.split()
            for f in firsts:
                if f.isdigit() and len(f) <= 18:
                    self.heard.append((status, int(f)))

    # --- bookkeeping (publishing thread) ---------------------------------------------------------------
    def _settle_one(self, first: int, kept: bool = True) -> None:
        """The envelope at ``first`` is settled: confirmed (or a record too large to send, ``kept``), or given up
        (full, refused). Only the first kind moves the mark: a resumed run sends again from the first given up."""
        self.outstanding.pop(first, None)
        if not kept:
            return  # never in ``done``: the mark stops before it
        self.done.add(first)
        while self.order and self.order[0][0] in self.done:
            f, n = self.order.popleft()
            self.done.discard(f)
            self.mark = f + n

    def hear(self) -> None:
        """Take in the confirmations the MQTT thread queued."""
        now = time.monotonic()
        while self.heard:
            status, first = self.heard.popleft()
            e = self.outstanding.get(first)
            if e is None:
                continue  # a confirmation of something sent twice
            self.last_progress = now
            if status == "ok":
                self.confirmed += e.count
                self._settle_one(first)
            else:  # "full" (the backlog) or "refused" (the keyspace, for a while): sent again a little later
                e.full_since = e.full_since or now
                e.sent_at = now - self.confirm_timeout + 1.0
                if now - e.full_since > self.wait_for_room:
                    if status == "full":
                        self.full += e.count
                    else:
                        self.refused += e.count
                    self._settle_one(first, kept=False)

    def _resend_due(self) -> None:
        if not self.connected.is_set():
            return
        now = time.monotonic()
        for first, e in list(self.outstanding.items()):
            if now - e.sent_at > self.confirm_timeout or e.sent_at < self.connected_at:
                self.resent += 1
                self._publish(first, e)

    def _publish(self, first: int, e: _Sent) -> None:
        e.sent_at = time.monotonic()
        self.client.publish(self.topic, e.payload, qos=self.qos)

    def _wait(self, until: Callable[[], bool]) -> None:
        """Wait, doing the bookkeeping, until ``until()``; GaveUp when the broker or the platform stays away."""
        while not until():
            self.hear()
            self._resend_due()
            quiet = time.monotonic() - self.last_progress
            if quiet > self.max_outage:
                why = "the broker is unreachable" if not self.connected.is_set() else "the platform does not answer"
                raise GaveUp("no confirmation for %.0f s (%s)" % (quiet, why), code="gave_up")
            time.sleep(0.005)

    def send(self, first: int, records: list[bytes], last_line: int = 0) -> None:
        """Send one envelope of ``records`` numbered from ``first`` (waits while the window is full)."""
        if len(self.outstanding) >= self.window or not self.connected.is_set():
            self._wait(lambda: len(self.outstanding) < self.window and self.connected.is_set())
        if not self.outstanding:
            self.last_progress = time.monotonic()
        e = _Sent(envelope.encode_envelope(self.id, first, records), len(records), last_line)
        self.outstanding[first] = e
        self.order.append((first, len(records)))
        self.sent += len(records)
        self._publish(first, e)
        self.hear()

    def skip(self, n: int) -> None:
        """Record ``n`` is not sent (too large): settled at once, so that the mark can pass it."""
        self.order.append((n, 1))
        self._settle_one(n)

    def publish(
        self,
        records: Records,
        *,
        batch: int = 200,
        linger_ms: float = 5.0,
        rate: float | None = None,
        checkpoint: "Checkpoint | None" = None,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Send ``records`` ((line number, bytes) pairs, numbered from 0 in order; those numbered below
        ``first_record`` are skipped), ``batch`` at most to an envelope, none waiting longer than
        ``linger_ms``, at most ``rate`` a second. A record too large for one message (None, or over the
        room of an envelope) is not sent but keeps its number. Returns once the last envelope is sent
        (``finish()`` waits for the confirmations); GaveUp when the platform stays away. ``progress`` is
        called with the records read so far, at most every 0.1 s; ``checkpoint`` written every 0.5 s."""
        if not 1 <= batch <= envelope.MAX_ENVELOPE_RECORDS:
            raise BadRequestError(f"batch must be 1 to {envelope.MAX_ENVELOPE_RECORDS} records, not {batch}")
        skip = self.first_record
        t0 = time.monotonic()
        last_draw = last_cp = 0.0
        pending: list[bytes] = []
        pending_first = skip
        pending_bytes = 0
        pending_started = 0.0
        last_line = 0
        room = self.max_payload - 256  # the envelope's header: numbers, and up to 8 bytes of size per record
        linger = linger_ms / 1000

        def flush() -> None:
            nonlocal pending, pending_bytes
            if pending:
                self.send(pending_first, pending, last_line)
            pending, pending_bytes = [], 0

        prev_line = 0
        for n, (line, rec) in enumerate(records):
            self.records_read = n + 1
            if prev_line and line - prev_line > 1000:  # one record over a thousand lines: a quote left open?
                self.long_records.append(prev_line)
            prev_line = line
            if n < skip:
                continue
            if rate:
                ahead = (n - skip) / rate - (time.monotonic() - t0)
                if ahead > 0:
                    if pending and time.monotonic() + ahead - pending_started > linger:
                        flush()  # nothing waits in a batch longer than the linger
                    time.sleep(ahead)
            if rec is None or len(rec) > room:
                self.too_large.append(line)
                flush()
                self.skip(n)  # it keeps its number: the checkpoint counts records of the file
                continue
            if pending and pending_bytes + len(rec) + 8 * (len(pending) + 1) > room:
                flush()
            if not pending:
                pending_first, pending_started = n, time.monotonic()
            pending.append(rec)
            pending_bytes += len(rec)
            last_line = line
            if len(pending) >= batch or time.monotonic() - pending_started > linger:
                flush()
            if checkpoint is not None and time.monotonic() - last_cp > 0.5:
                last_cp = time.monotonic()
                checkpoint.write(self.mark)
            if progress is not None and time.monotonic() - last_draw > 0.1:
                last_draw = time.monotonic()
                progress(n + 1)
        flush()

    def finish(self) -> None:
        """Wait until every envelope is settled (GaveUp past the outage bound), then disconnect."""
        try:
            self._wait(lambda: not self.outstanding)
        finally:
            self.close()

    def close(self) -> None:
        """Disconnect now (what is not confirmed stays unconfirmed), taking in what was heard until then."""
        self.client.disconnect()
        self.client.loop_stop()
        self.hear()

    def result(self) -> Published:
        return Published(
            self.sent, self.confirmed, self.mark, self.resent, self.full, self.refused,
            list(self.too_large), list(self.long_records), self.records_read, self.max_payload,
        )  # fmt: skip


# --- checkpoints ------------------------------------------------------------------------------------------


def file_digest(path: Path) -> str:
    """sha256 of the file: a checkpoint is for this content only."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Checkpoint:
    """How many records from the start of a file are confirmed, for one file content and topic, kept in a
    small JSON file written atomically (a temporary file and a rename). ``on_error`` hears a failed write
    (the publishing goes on: only a later resume would not know where to start)."""

    MAX_BYTES = 64 << 10

    def __init__(
        self, cp: Path, path: Path, topic: str, digest: str, on_error: Callable[[OSError], None] | None = None
    ) -> None:
        self.cp, self.path, self.topic, self.digest = cp, path, topic, digest
        self.on_error = on_error
        self.written = False

    def read(self) -> int:
        """The number of records already confirmed; CheckpointError when there is no checkpoint, or it is
        damaged, or it is for another topic or another content of the file."""
        try:
            fd = os.open(self.cp, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            with os.fdopen(fd, "rb") as fh:
                if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                    raise ValueError("not a regular file")
                raw = fh.read(self.MAX_BYTES + 1)
            if len(raw) > self.MAX_BYTES:
                raise ValueError(f"it is larger than {self.MAX_BYTES // 1024} KiB")
            data = json.loads(raw)
        except FileNotFoundError:
            raise CheckpointError(
                f"no checkpoint at {self.cp}", code="no_checkpoint", hint="nothing was published from this file yet"
            ) from None
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot read the checkpoint {self.cp}: {exc}", code="bad_checkpoint") from None
        if not isinstance(data, dict) or data.get("topic") != self.topic:
            raise CheckpointError(
                f"the checkpoint {self.cp} is for another topic than {self.topic}",
                code="other_topic",
                hint="publish to the same stream, or delete it to publish from the start",
            )
        if data.get("sha256") != self.digest:
            raise CheckpointError(
                f"{self.path} changed since the checkpoint {self.cp} was written",
                code="file_changed",
                hint="records may have moved: delete the checkpoint and publish the whole file (rows keyed by primary"
                " key are not doubled)",
            )
        done = data.get("records_confirmed")
        if not isinstance(done, int) or done < 0:
            raise CheckpointError(f"the checkpoint {self.cp} is damaged", code="bad_checkpoint")
        return done

    def write(self, done: int) -> None:
        data = {"file": str(self.path.resolve()), "topic": self.topic, "sha256": self.digest, "records_confirmed": done}
        try:
            tmp = self.cp.with_name(f".{self.cp.name}.tmp")
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self.cp)
            self.written = True
        except OSError as exc:
            if self.on_error is not None:
                self.on_error(exc)

    def remove(self) -> None:
        self.cp.unlink(missing_ok=True)
