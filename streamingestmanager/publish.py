"""mysimbdp-publish: stream a CSV file to mysimbdp, one record per MQTT message.

    mysimbdp-publish -u USER -p PASS FILE.csv [--topic NAME] [--rate N] [--broker HOST:PORT]

Each record (a line, or several lines when a quoted field holds newlines) goes as one UTF-8 message, QoS 1,
to ``tenants/USER/in/NAME`` (NAME defaults to ``default``); the header line is skipped unless
``--no-header`` says the file has none. It shows a progress bar on a terminal and prints how many
messages the broker acknowledged. MQTT 5 lets the broker say more than "received": a message with no
subscriber at all (the tenant's stream app was never started) is reported apart, because the broker does
not keep it. Exit status 0 when every message was acknowledged and kept, 1 otherwise.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from mysimbdp import broker, credentials, csvrecords, names
from mysimbdp.errors import (
    AuthenticationFailed,
    BrokerUnavailable,
    InvalidName,
    TenantError,
    UsageError,
    exit_status,
)

NO_MATCHING_SUBSCRIBERS = 16
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


class Publisher:
    """QoS 1 publishing with a bounded window. The MQTT thread only records each acknowledgement; the
    publishing thread does the bookkeeping, so the two never wait on each other's locks."""

    def __init__(
        self, host: str, port: int, user: str, password: str, window: int = 50, wait_for_subscriber: float = 0.0
    ) -> None:
        """``window``: messages in flight. Measured: paho's cost per acknowledgement grows with it, and 50
        published fastest here (15k msg/s; 2,000 gave 6k). A message the broker did not keep (no subscriber)
        is sent again for up to ``wait_for_subscriber`` seconds after the first such answer."""
        self.sent = self.acked = self.unrouted = self.refused = self.resent = 0
        self.refusal: str | None = None
        self.window = threading.Semaphore(window)
        self.results: collections.deque = collections.deque()  # (mid, reason code) from the MQTT thread
        self.in_flight: dict[int, tuple[str, bytes]] = {}  # publishing thread only
        self.again: list[tuple[str, bytes]] = []
        self.wait_for_subscriber = wait_for_subscriber
        self.waiting_since: float | None = None
        self.connack = None
        self.max_payload = MAX_PAYLOAD
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv5)
        c.username_pw_set(user, password)
        c.max_inflight_messages_set(window)
        c.on_connect = self._on_connect
        c.on_publish = self._on_publish
        self.client = c
        try:
            c.connect(host, port, keepalive=30)
        except OSError as exc:
            raise BrokerUnavailable(
                f"cannot reach the broker at {host}:{port}: {exc.strerror or exc}",
                hint="is the platform running? check --broker",
            ) from None
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

    def _on_connect(self, client, userdata, flags, rc, props) -> None:
        packet = getattr(props, "MaximumPacketSize", None) if props is not None else None
        if isinstance(packet, int) and packet > 2048:  # the broker's own bound, when it says it
            self.max_payload = min(self.max_payload, packet - 1024)
        self.connack = rc

    def _on_publish(self, client, userdata, mid, rc, props) -> None:
        self.results.append((mid, rc))
        self.window.release()

    def _settle(self) -> None:
        """Count the acknowledgements that came in; queue again what the broker did not keep."""
        while self.results:
            mid, rc = self.results.popleft()
            message = self.in_flight.pop(mid, None)
            if rc.is_failure:
                self.refused += 1
                self.refusal = str(rc)
            elif rc.value == NO_MATCHING_SUBSCRIBERS:
                now = time.monotonic()
                self.waiting_since = self.waiting_since or now
                if message is not None and now - self.waiting_since < self.wait_for_subscriber:
                    self.again.append(message)
                else:
                    self.unrouted += 1
            else:
                self.acked += 1
                self.waiting_since = None

    def _send(self, topic: str, payload: bytes) -> None:
        self.window.acquire()
        info = self.client.publish(topic, payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self.window.release()
            raise BrokerUnavailable(f"lost the connection to the broker ({mqtt.error_string(info.rc)})")
        self.in_flight[info.mid] = (topic, payload)

    def publish(self, topic: str, payload: bytes) -> None:
        self._send(topic, payload)
        self.sent += 1
        if len(self.results) > 256:
            self._settle()
            self._resend_due()

    def _resend_due(self) -> None:
        if not self.again:
            return
        batch, self.again = self.again, []
        time.sleep(0.2)  # give the subscriber a moment
        for topic, payload in batch:
            self.resent += 1
            self._send(topic, payload)

    def finish(self, timeout: float = 120) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._settle()
            self._resend_due()
            if self.acked + self.unrouted + self.refused >= self.sent and not self.again:
                break
            time.sleep(0.02)
        self.client.disconnect()
        self.client.loop_stop()
        self._settle()
        return self.acked + self.unrouted + self.refused == self.sent


def run(args) -> int:
    host, port = broker_address(args.broker)
    if args.rate is not None and not (0 < args.rate < float("inf")):
        raise UsageError(f"--rate must be a positive number of messages a second, not {args.rate}")
    path = Path(args.file)
    if not path.is_file():
        raise TenantError(f"{path} is not a file")
    try:
        names.tenant(args.user)
        stream = names.stream(args.topic)
    except InvalidName as exc:  # a bad -u or --topic is a usage error (exit 2)
        raise UsageError(exc.message, hint=exc.hint) from None
    password = credentials.client_password(args.password, args.user)
    topic = broker.data_topic(args.user, stream)
    pub = Publisher(host, port, args.user, password, wait_for_subscriber=args.wait_for_subscriber)
    total = sum(1 for _ in records(path, not args.no_header)) if sys.stderr.isatty() and not args.quiet else 0
    t0 = time.monotonic()
    last_draw = 0.0
    too_large: list[int] = []
    for n, (line, rec) in enumerate(records(path, not args.no_header, pub.max_payload), 1):
        if rec is None or len(rec) > pub.max_payload:
            too_large.append(line)
            continue
        if args.rate:
            ahead = (n - 1) / args.rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
        pub.publish(topic, rec)
        if total and time.monotonic() - last_draw > 0.1:
            last_draw = time.monotonic()
            done = int(30 * n / total)
            sys.stderr.write(
                f"\r{path.name[:24]:<24} [{'#' * done}{' ' * (30 - done)}] {n}/{total} "
                f"{n / max(last_draw - t0, 1e-6):8.0f} msg/s"
            )
            sys.stderr.flush()
    complete = pub.finish()
    took = time.monotonic() - t0
    if total:
        sys.stderr.write("\r" + " " * 90 + "\r")
    print(
        f"published {pub.sent} messages to {topic} in {took:.1f}s ({pub.sent / max(took, 1e-6):.0f} msg/s): "
        f"{pub.acked} acknowledged"
    )
    if pub.resent:
        print(f"messages were sent again {pub.resent} times in all because no subscriber was there yet")
    if too_large:
        where = ", ".join(map(str, too_large[:5])) + (" ..." if len(too_large) > 5 else "")
        print(
            f"{len(too_large)} records were not sent: larger than {pub.max_payload // 1024} KiB, the most one message "
            f"may hold (a quote left open?), at line(s) {where}"
        )
    if pub.unrouted:
        print(
            f"{pub.unrouted} had no subscriber and were not kept by the broker: start the tenant's stream app "
            "first (POST /v1/instances)"
        )
    if pub.refused:
        print(f"{pub.refused} were refused by the broker ({pub.refusal})")
    if not complete:
        print(f"{pub.sent - pub.acked - pub.unrouted - pub.refused} were never acknowledged (connection lost?)")
    return 0 if pub.acked == pub.sent and not too_large else 1


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
    p.add_argument("--rate", type=float, help="at most this many messages a second")
    p.add_argument(
        "--broker",
        default=os.environ.get("MYSIMBDP_BROKER", "127.0.0.1:1883"),
        help="HOST:PORT of the broker (default: $MYSIMBDP_BROKER or 127.0.0.1:1883)",
    )
    p.add_argument("--no-header", action="store_true", help="the file has no header line: send every line")
    p.add_argument(
        "--wait-for-subscriber",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="send a message the broker did not keep (no subscriber yet) again for this long (default 30)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return exit_status("mysimbdp-publish", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
