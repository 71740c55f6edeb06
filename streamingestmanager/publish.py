"""mysimbdp-publish: stream a CSV file to mysimbdp, and say how much of it is safe.

    mysimbdp-publish -u USER -p PASS FILE.csv [--topic NAME] [--rate N] [--broker HOST:PORT] [--resume]

Each record (a line, or several lines when a quoted field holds newlines) is numbered and sent, several to
a message (an envelope, :mod:`mysimbdp.inbox`), at QoS 1, to ``tenants/USER/batch/NAME`` (NAME defaults to
``default``); the header line is skipped unless ``--no-header`` says the file has none. A record counts as
**confirmed** once the platform's inbox writer says it is in Cassandra: from then on it becomes exactly
one row, whatever single process crashes. Until then the publisher keeps it and sends it again after a
broker restart or crash. If nothing is confirmed for ``--max-outage`` seconds it gives up, says how many
records of the file are confirmed (also kept in a checkpoint file), and ``--resume`` sends the rest.

Exit status: 0 every record confirmed; 1 some were not kept (too large, the stream's backlog full,
refused); 75 gave up (run again with --resume); 130 interrupted (the same); 2 usage; 65 no such file;
69 broker unreachable at the start; 77 wrong user name or password. The checkpoint is removed when every
record was confirmed.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import secrets
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from mysimbdp import bounded, broker, credentials, csvrecords, daemon, inbox, names
from mysimbdp.services import mosquitto_broker
from mysimbdp.errors import (
    AuthenticationFailed,
    BrokerUnavailable,
    InvalidName,
    TenantError,
    UsageError,
    exit_status,
)

MAX_PACKET = 256 << 10  # the platform broker's max_packet_size (broker.max_packet_kb); MQTT 5 says it on connect
MAX_PAYLOAD = MAX_PACKET - 1024  # room for the topic and the packet's header


def records(path: Path, skip_header: bool, max_payload: int = MAX_PAYLOAD) -> Iterator[tuple[int, bytes | None]]:
    """(first line number, whole CSV record without its line end): a quoted newline stays inside, quotes
    read as Python's csv module reads them (mysimbdp/csvrecords.py). A record larger than one message may
    hold comes as None (and is not kept in memory: a quote left open can make the rest of a file one record)."""
    with open(path, "rb") as fh:
        found = csvrecords.records(fh, csvrecords.delimiter_for(path.name), max_bytes=max_payload)
        for n, (line, record) in enumerate(found):
            if n == 0 and skip_header:
                continue
            if record is None or record.strip():
                yield line, record


@dataclass
class _Sent:
    payload: bytes
    count: int
    last_line: int  # the file line number of its last record (for the message when giving up)
    sent_at: float = 0.0
    full_since: float | None = None


class Publisher:
    """Records go in envelopes (:mod:`mysimbdp.inbox`) of up to ``batch`` records or ``linger`` seconds, at
    QoS 1, to ``tenants/<user>/batch/<stream>``. The inbox writer confirms an envelope on
    ``confirm/<user>/<publisher id>`` once its records are in Cassandra; only then do they count as confirmed.
    What is not confirmed within ``confirm_timeout`` (a broker or writer crash lost it) is sent again, with
    the same numbers: a record that arrives twice is still one row. The MQTT thread only queues what it
    hears; the publishing thread does the bookkeeping."""

    def __init__(
        self,
        host: str,
        port: int,
        user: str,
        password: str,
        *,
        window: int = 64,
        confirm_timeout: float = 10.0,
        max_outage: float = 60.0,
        wait_for_room: float = 30.0,
        first_record: int = 0,
    ) -> None:
        self.user = user
        self.id = secrets.token_hex(8)
        self.sent = self.confirmed = self.refused = self.full = self.resent = 0
        self.window = window
        self.confirm_timeout = confirm_timeout
        self.max_outage = max_outage
        self.wait_for_room = wait_for_room
        self.outstanding: dict[int, _Sent] = {}  # first record number -> envelope, in sending order
        self.order: collections.deque[tuple[int, int]] = collections.deque()  # (first, count) not yet below the mark
        self.done: set[int] = set()  # firsts settled (confirmed, or given up) above the mark
        self.mark = first_record  # every record numbered below this is confirmed (or too large to send)
        self.heard: collections.deque = collections.deque()  # (status, first) from the MQTT thread
        self.connected = threading.Event()
        self.connected_at = 0.0  # the last (re)connection: what was sent before it is sent again
        self.connack = None
        self.last_progress = time.monotonic()
        self.max_payload = MAX_PAYLOAD
        self.confirm_topic = broker.confirm_topic(user, self.id)
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
                    raise BrokerUnavailable(
                        f"cannot reach the broker at {host}:{port}: {exc.strerror or exc}",
                        hint="is the platform running? check --broker",
                    ) from None
                time.sleep(0.5)
        c.loop_start()
        deadline = time.monotonic() + 10
        while self.connack is None and time.monotonic() < deadline:
            time.sleep(0.01)
        if self.connack is None:
            raise BrokerUnavailable(f"the broker at {host}:{port} did not answer")
        if self.connack.is_failure:
            c.loop_stop()
            if self.connack.value in (134, 135, 4, 5):  # bad user name or password / not authorized
                raise AuthenticationFailed("wrong user name or password", hint="check -u/-p")
            raise BrokerUnavailable(f"the broker refused the connection: {self.connack}")
        if not self.connected.wait(10):
            raise BrokerUnavailable("the broker did not grant the confirmation subscription")

    def _on_connect(self, client, userdata, flags, rc, props) -> None:
        packet = getattr(props, "MaximumPacketSize", None) if props is not None else None
        if isinstance(packet, int) and packet > 2048:  # the broker's own bound, when it says it
            self.max_payload = min(self.max_payload, packet - 1024)
        self.connack = rc
        if not rc.is_failure:
            mosquitto_broker.no_delay(client)
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
        (full, refused). Only the first kind moves the mark: --resume sends again from the first given up."""
        self.outstanding.pop(first, None)
        if not kept:
            return  # never in ``done``: the mark stops before it
        self.done.add(first)
        while self.order and self.order[0][0] in self.done:
            f, n = self.order.popleft()
            self.done.discard(f)
            self.mark = f + n

    def _hear(self) -> None:
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
        self.client.publish(self.topic, e.payload, qos=1)

    def _wait(self, until) -> None:
        """Wait, doing the bookkeeping, until ``until()``; GaveUp when the broker or the platform stays away."""
        while not until():
            self._hear()
            self._resend_due()
            quiet = time.monotonic() - self.last_progress
            if quiet > self.max_outage:
                raise GaveUp(
                    "no confirmation for %.0f s (%s)"
                    % (
                        quiet,
                        "the broker is unreachable" if not self.connected.is_set() else "the platform does not answer",
                    )
                )
            time.sleep(0.005)

    def send(self, topic: str, first: int, records: list[bytes], last_line: int) -> None:
        """Send one envelope of ``records`` numbered from ``first`` (waits while the window is full)."""
        self.topic = topic
        if len(self.outstanding) >= self.window or not self.connected.is_set():
            self._wait(lambda: len(self.outstanding) < self.window and self.connected.is_set())
        if not self.outstanding:
            self.last_progress = time.monotonic()
        e = _Sent(inbox.encode_envelope(self.id, first, records), len(records), last_line)
        self.outstanding[first] = e
        self.order.append((first, len(records)))
        self.sent += len(records)
        self._publish(first, e)
        self._hear()

    def skip(self, n: int) -> None:
        """Record ``n`` is not sent (too large): settled at once, so that the mark can pass it."""
        self.order.append((n, 1))
        self._settle_one(n)

    def finish(self) -> None:
        """Wait until every envelope is settled (GaveUp past the outage bound), then disconnect."""
        try:
            self._wait(lambda: not self.outstanding)
        finally:
            self.client.disconnect()
            self.client.loop_stop()


class GaveUp(Exception):
    pass


def checkpoint_path(args, path: Path) -> Path:
    return Path(args.checkpoint) if args.checkpoint else path.with_name(path.name + ".mysimbdp-checkpoint")


def file_digest(path: Path) -> str:
    """sha256 of the file: a checkpoint is for this content only."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_checkpoint(cp: Path, path: Path, topic: str, digest: str) -> int:
    """The number of records already confirmed, from a checkpoint of the same file content and topic."""
    try:
        data = bounded.loads_json(bounded.read_regular(cp, 64 << 10), max_bytes=64 << 10)
    except FileNotFoundError:
        raise UsageError(f"--resume: no checkpoint at {cp}", hint="nothing was published from this file yet") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"--resume: cannot read the checkpoint {cp}: {exc}") from None
    if not isinstance(data, dict) or data.get("topic") != topic:
        raise UsageError(
            f"--resume: the checkpoint {cp} is for another topic than {topic}",
            hint="use the same --topic, or delete it to publish from the start",
        )
    if data.get("sha256") != digest:
        raise UsageError(
            f"--resume: {path} changed since the checkpoint {cp} was written",
            hint="records may have moved: delete the checkpoint and publish the whole file (rows keyed by primary key"
            " are not doubled)",
        )
    done = data.get("records_confirmed")
    if not isinstance(done, int) or done < 0:
        raise UsageError(f"--resume: the checkpoint {cp} is damaged")
    return done


class Checkpoint:
    """How many records from the start of the file are confirmed, kept in a small JSON file (atomically)."""

    def __init__(self, cp: Path, path: Path, topic: str, digest: str) -> None:
        self.cp, self.path, self.topic, self.digest = cp, path, topic, digest
        self.warned = False
        self.written = False

    def write(self, done: int) -> None:
        data = {"file": str(self.path.resolve()), "topic": self.topic, "sha256": self.digest, "records_confirmed": done}
        try:
            daemon.write_atomic(self.cp, json.dumps(data))
            self.written = True
        except OSError as exc:
            if not self.warned:
                self.warned = True
                print(
                    f"mysimbdp-publish: warning: cannot write the checkpoint {self.cp} ({exc.strerror or exc}):"
                    " --resume will not know where to start (use --checkpoint PATH)",
                    file=sys.stderr,
                )

    def remove(self) -> None:
        self.cp.unlink(missing_ok=True)


def run(args) -> int:
    host, port = broker_address(args.broker)
    if args.rate is not None and not (0 < args.rate < float("inf")):
        raise UsageError(f"--rate must be a positive number of messages a second, not {args.rate}")
    if not 1 <= args.batch <= inbox.MAX_ENVELOPE_RECORDS:
        raise UsageError(f"--batch must be 1 to {inbox.MAX_ENVELOPE_RECORDS} records, not {args.batch}")
    path = Path(args.file)
    if not path.is_file():
        raise TenantError(f"{path} is not a file")
    try:
        names.tenant(args.user)
        stream = names.stream(args.topic)
    except InvalidName as exc:  # a bad -u or --topic is a usage error (exit 2)
        raise UsageError(exc.message, hint=exc.hint) from None
    if not 0 <= args.linger_ms <= 10000:
        raise UsageError(f"--linger-ms must be 0 to 10000, not {args.linger_ms}")
    topic = broker.batch_topic(args.user, stream)
    cp = checkpoint_path(args, path)
    digest = file_digest(path)
    skip = read_checkpoint(cp, path, topic, digest) if args.resume else 0
    checkpoint = Checkpoint(cp, path, topic, digest)
    password = credentials.client_password(args.password, args.user)
    pub = Publisher(
        host, port, args.user, password, max_outage=args.max_outage, wait_for_room=args.wait_for_room, first_record=skip
    )
    total = sum(1 for _ in records(path, not args.no_header)) if sys.stderr.isatty() and not args.quiet else 0
    t0 = time.monotonic()
    last_draw = last_cp = 0.0
    too_large: list[int] = []
    long_records: list[int] = []
    batch: list[bytes] = []
    batch_first = skip
    batch_bytes = 0
    batch_started = 0.0
    last_line = 0
    room = pub.max_payload - 256  # the envelope's header: numbers, and up to 8 bytes of size per record

    def flush() -> None:
        nonlocal batch, batch_bytes
        if batch:
            pub.send(topic, batch_first, batch, last_line)
        batch, batch_bytes = [], 0

    gave_up = None
    interrupted = False
    n = -1
    prev_line = 0
    try:
        for n, (line, rec) in enumerate(records(path, not args.no_header, pub.max_payload)):
            if prev_line and line - prev_line > 1000:  # one record over a thousand lines: a quote left open?
                long_records.append(prev_line)
            prev_line = line
            if n < skip:
                continue
            if args.rate:
                ahead = (n - skip) / args.rate - (time.monotonic() - t0)
                if ahead > 0:
                    if batch and time.monotonic() + ahead - batch_started > args.linger_ms / 1000:
                        flush()  # nothing waits in a batch longer than the linger
                    time.sleep(ahead)
            if rec is None or len(rec) > room:
                too_large.append(line)
                flush()
                pub.skip(n)  # it keeps its number: the checkpoint counts records of the file
                continue
            if batch and batch_bytes + len(rec) + 8 * (len(batch) + 1) > room:
                flush()
            if not batch:
                batch_first, batch_started = n, time.monotonic()
            batch.append(rec)
            batch_bytes += len(rec)
            last_line = line
            if len(batch) >= args.batch or time.monotonic() - batch_started > args.linger_ms / 1000:
                flush()
            if time.monotonic() - last_cp > 0.5:
                last_cp = time.monotonic()
                checkpoint.write(pub.mark)
            if total and time.monotonic() - last_draw > 0.1:
                last_draw = time.monotonic()
                done = int(30 * (n + 1) / total)
                sys.stderr.write(
                    f"\r{path.name[:24]:<24} [{'#' * done}{' ' * (30 - done)}] {n + 1}/{total} "
                    f"{(n + 1 - skip) / max(last_draw - t0, 1e-6):8.0f} rec/s"
                )
                sys.stderr.flush()
        flush()
        pub.finish()
    except GaveUp as exc:
        gave_up = str(exc)
    except KeyboardInterrupt:
        interrupted = True
        pub.client.disconnect()
        pub._hear()
    if skip and n + 1 < skip:
        raise UsageError(f"--resume: the checkpoint {cp} counts {skip} records, the file has {n + 1}")
    checkpoint.write(pub.mark)
    took = time.monotonic() - t0
    if total:
        sys.stderr.write("\r" + " " * 90 + "\r")
    print(
        f"published {pub.sent} records to {topic} in {took:.1f}s ({pub.sent / max(took, 1e-6):.0f} records/s): "
        f"{pub.confirmed} confirmed" + (f" (after {skip} confirmed before, skipped by --resume)" if skip else "")
    )
    if pub.resent:
        print(f"{pub.resent} envelopes were sent again (not confirmed in time: a broker or platform restart?)")
    if too_large:
        where = ", ".join(map(str, too_large[:5])) + (" ..." if len(too_large) > 5 else "")
        print(
            f"{len(too_large)} records were not sent: larger than {pub.max_payload // 1024} KiB, the most one message "
            f"may hold (a quote left open?), at line(s) {where}"
        )
    if pub.full:
        print(
            f"{pub.full} were not kept: the stream's backlog is full (start the stream, or add instances: "
            "POST /v1/instances), then send them again with --resume"
        )
    if pub.refused:
        print(
            f"{pub.refused} were refused: the platform could not write to your keyspace (was its inbox table or its"
            " replication changed?); send them again with --resume"
        )
    if long_records:
        where = ", ".join(map(str, long_records[:5])) + (" ..." if len(long_records) > 5 else "")
        print(f"warning: the record(s) at line(s) {where} span more than 1,000 lines each (a quote left open?)")
    if gave_up or interrupted:
        why = f"gave up: {gave_up}" if gave_up else "interrupted"
        print(
            f"{why}. The first {pub.mark} records of the file are confirmed; "
            f"run the same command with --resume to send the rest (checkpoint: {cp})"
        )
        return 75 if gave_up else 130
    ok = pub.confirmed == pub.sent and not too_large
    if ok and pub.mark == n + 1:
        checkpoint.remove()  # nothing left to resume
    return 0 if ok else 1


def broker_address(text: str) -> tuple[str, int]:
    """HOST:PORT (an IPv6 address in brackets) -> (host, port); UsageError when it is not that."""
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--broker must be HOST:PORT, for example 127.0.0.1:1883, not {text!r}")
    return host, int(port)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mysimbdp-publish", description="Stream a CSV file to mysimbdp over MQTT.")
    p.add_argument("file", metavar="FILE.csv")
    p.add_argument("-u", "--user", required=True, help="your tenant name")
    p.add_argument("-p", "--password", help="your password (else $MYSIMBDP_PASSWORD, else a prompt)")
    p.add_argument("--topic", default="default", help="the stream name under your topic prefix (default: default)")
    p.add_argument("--rate", type=float, help="at most this many records a second")
    p.add_argument(
        "--broker",
        default=os.environ.get("MYSIMBDP_BROKER", "127.0.0.1:1883"),
        help="HOST:PORT of the broker (default: $MYSIMBDP_BROKER or 127.0.0.1:1883)",
    )
    p.add_argument("--no-header", action="store_true", help="the file has no header line: send every line")
    p.add_argument(
        "--batch", type=int, default=200, metavar="N", help="records per message, at most (default 200; 1 to 4096)"
    )
    p.add_argument(
        "--linger-ms",
        type=float,
        default=5.0,
        metavar="MS",
        help="send a message that is not full after this long (default 5)",
    )
    p.add_argument(
        "--max-outage",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="give up when nothing is confirmed for this long, e.g. the broker stays down (default 60)",
    )
    p.add_argument(
        "--wait-for-room",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="send records refused (the stream's backlog full, the keyspace failing) again for this long (default 30)",
    )
    p.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="where to keep the count of confirmed records (default: FILE.mysimbdp-checkpoint)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="skip the records the checkpoint says were confirmed (after a run that gave up)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return exit_status("mysimbdp-publish", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
