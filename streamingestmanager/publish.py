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

The publishing itself (envelopes, confirmations, resending, the checkpoint) is the client SDK's
:class:`mysimbdp_client.publisher.Publisher`; this command reads the file with the platform's one record
reader, and turns the SDK's outcome into the lines and the exit status above.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Iterator

from mysimbdp_client import errors as sdk
from mysimbdp_client.client import broker_address as parse_broker
from mysimbdp_client.publisher import MAX_PAYLOAD, Checkpoint, Publisher, file_digest

from mysimbdp import broker, credentials, csvrecords, inbox, names
from mysimbdp.errors import (
    AuthenticationFailed,
    BrokerUnavailable,
    InvalidName,
    TenantError,
    UsageError,
    exit_status,
)

__all__ = ["Publisher", "main", "records"]


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


def checkpoint_path(args, path: Path) -> Path:
    return Path(args.checkpoint) if args.checkpoint else path.with_name(path.name + ".mysimbdp-checkpoint")


def read_checkpoint(checkpoint: Checkpoint) -> int:
    """The number of records already confirmed (for --resume); UsageError when the checkpoint cannot say."""
    try:
        return checkpoint.read()
    except sdk.CheckpointError as exc:
        hint = "use the same --topic, or delete it to publish from the start" if exc.code == "other_topic" else exc.hint
        raise UsageError(f"--resume: {exc.message}", hint=hint) from None


def connect(host: str, port: int, user: str, password: str, stream: str, args, first_record: int) -> Publisher:
    try:
        return Publisher(
            host, port, user, password, stream=stream, max_outage=args.max_outage, wait_for_room=args.wait_for_room,
            first_record=first_record,
        )  # fmt: skip
    except sdk.AuthenticationError:
        raise AuthenticationFailed("wrong user name or password", hint="check -u/-p") from None
    except sdk.TransportError as exc:
        hint = "is the platform running? check --broker" if exc.hint else None
        raise BrokerUnavailable(exc.message, hint=hint) from None


def warn_once(cp: Path):
    warned = []

    def warn(exc: OSError) -> None:
        if not warned:
            warned.append(exc)
            print(
                f"mysimbdp-publish: warning: cannot write the checkpoint {cp} ({exc.strerror or exc}):"
                " --resume will not know where to start (use --checkpoint PATH)",
                file=sys.stderr,
            )

    return warn


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
    checkpoint = Checkpoint(cp, path, topic, file_digest(path), on_error=warn_once(cp))
    skip = read_checkpoint(checkpoint) if args.resume else 0
    password = credentials.client_password(args.password, args.user)
    pub = connect(host, port, args.user, password, stream, args, skip)
    total = sum(1 for _ in records(path, not args.no_header)) if sys.stderr.isatty() and not args.quiet else 0
    t0 = time.monotonic()

    def draw(done_records: int) -> None:
        done = int(30 * done_records / total)
        sys.stderr.write(
            f"\r{path.name[:24]:<24} [{'#' * done}{' ' * (30 - done)}] {done_records}/{total} "
            f"{(done_records - skip) / max(time.monotonic() - t0, 1e-6):8.0f} rec/s"
        )
        sys.stderr.flush()

    gave_up = None
    interrupted = False
    try:
        pub.publish(
            records(path, not args.no_header, pub.max_payload), batch=args.batch, linger_ms=args.linger_ms,
            rate=args.rate, checkpoint=checkpoint, progress=draw if total else None,
        )  # fmt: skip
        pub.finish()
    except sdk.GaveUp as exc:
        gave_up = exc.message
        pub.close()
    except KeyboardInterrupt:
        interrupted = True
        pub.close()
    n = pub.records_read - 1
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
    too_large = pub.too_large
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
    long_records = pub.long_records
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
    try:
        return parse_broker(text)
    except ValueError:
        raise UsageError(f"--broker must be HOST:PORT, for example 127.0.0.1:1883, not {text!r}") from None


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
