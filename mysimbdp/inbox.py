"""The stream inbox: where a tenant's stream messages are kept, durably, from the moment they arrive.

Pure definitions, no I/O: the tables in the tenant's keyspace, the chunk format, and the envelope our own
publisher sends. The process that fills the inbox is :mod:`streamingestmanager.inbox_writer`; the tenant's
stream app instances read it (``tenant_apps/sdk/mysimbdp_app/stream.py``); docs/streaming.md tells the
whole path and the guarantee.

* A **chunk** is what the inbox writer gathered for one stream of one tenant in a few milliseconds: up to
  ``MAX_CHUNK_RECORDS`` records, kept as one row (their bytes one after the other, and their sizes).
* Chunks go to ``LANES`` lanes per tenant, in turn. In a lane, each chunk has a ``seq`` greater than the
  one before (microseconds since the epoch, made strictly increasing by the writer), and the writer writes
  a lane's next chunk only once the one before is written: a reader that has done ``seq`` never misses a
  chunk by reading ``seq > done``. A lane's chunks are partitioned by hour (``bucket``).
* ``mysimbdp_inbox_lanes`` says, per lane, the first and the latest chunk and the records written so far;
  ``mysimbdp_inbox_offsets`` says, per lane, what the tenant's instances have turned into rows. The
  difference is the **backlog**.
* An **envelope** is several records in one MQTT message, numbered by the publisher, which the writer
  confirms once they are in the inbox (``confirm/<tenant>/<publisher id>``).
"""

from __future__ import annotations

import re
from array import array
from dataclasses import dataclass

LANES = 16
LANES_IN = "(" + ", ".join(map(str, range(LANES))) + ")"  # CQL: read the lanes' rows only, never others
BUCKET_US = 3600 * 1_000_000  # one partition per lane and hour
MAX_CHUNK_RECORDS = 4096
MAX_CHUNK_BYTES = 1 << 20  # far below Cassandra's mutation limit
MAX_ENVELOPE_RECORDS = 4096
MAX_HEADER = 64 << 10
ENVELOPE_MAGIC = b"MB1 "
_PUBLISHER = re.compile(rb"[0-9a-f]{16}")
PUBLISHER_ID = re.compile(r"[0-9a-f]{16}")

INBOX_TABLE = "mysimbdp_inbox"
LANES_TABLE = "mysimbdp_inbox_lanes"
OFFSETS_TABLE = "mysimbdp_inbox_offsets"


def schema(keyspace: str, retention_hours: int) -> list[str]:
    """The inbox tables of one tenant (``keyspace`` is a checked tenant name). Chunks expire after
    ``retention_hours``; a time-window compaction drops whole expired files, and nothing is ever deleted
    (no tombstones to read past)."""
    ttl = int(retention_hours) * 3600
    return [
        f"CREATE TABLE IF NOT EXISTS {keyspace}.{INBOX_TABLE} (lane int, bucket bigint, seq bigint, stream text,"
        " total bigint, sizes blob, body blob, PRIMARY KEY ((lane, bucket), seq))"
        f" WITH default_time_to_live = {ttl} AND gc_grace_seconds = 3600"
        " AND compaction = {'class': 'TimeWindowCompactionStrategy', 'compaction_window_unit': 'HOURS',"
        " 'compaction_window_size': 6}",
        f"CREATE TABLE IF NOT EXISTS {keyspace}.{LANES_TABLE} (lane int PRIMARY KEY, first_seq bigint,"
        " head_seq bigint, head_total bigint)",
        f"CREATE TABLE IF NOT EXISTS {keyspace}.{OFFSETS_TABLE} (lane int PRIMARY KEY, seq bigint, total bigint)",
    ]


COLUMNS = {  # what the platform reads and writes: a tenant's table that differs is refused
    INBOX_TABLE: {
        "lane": "int",
        "bucket": "bigint",
        "seq": "bigint",
        "stream": "text",
        "total": "bigint",
        "sizes": "blob",
        "body": "blob",
    },
    LANES_TABLE: {"lane": "int", "first_seq": "bigint", "head_seq": "bigint", "head_total": "bigint"},
    OFFSETS_TABLE: {"lane": "int", "seq": "bigint", "total": "bigint"},
}


def schema_problem(columns: list[tuple[str, str, str]]) -> str | None:
    """What is wrong with a tenant's inbox tables, given (table, column, type) rows of system_schema.columns
    for its keyspace; None when they are as the platform made them (extra columns are allowed)."""
    found: dict[str, dict[str, str]] = {}
    for table, column, kind in columns:
        found.setdefault(table, {})[column] = kind
    for table, wanted in COLUMNS.items():
        have = found.get(table, {})
        for column, kind in wanted.items():
            if have.get(column) != kind:
                return f"{table}.{column} is {have.get(column) or 'missing'}, not {kind}"
    return None


def insert_chunk_cql(keyspace: str) -> str:
    """How a chunk is written (the inbox writer; a dry run of a stream app fills its scratch inbox the same
    way). ``keyspace`` is a checked name."""
    return (
        f"INSERT INTO {keyspace}.{INBOX_TABLE} (lane, bucket, seq, stream, total, sizes, body)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)"
    )


def insert_lane_cql(keyspace: str) -> str:
    """How a lane's row is written with its first chunk."""
    return f"INSERT INTO {keyspace}.{LANES_TABLE} (lane, first_seq, head_seq, head_total) VALUES (?, ?, ?, ?)"


def bucket(seq: int) -> int:
    return seq // BUCKET_US


def pack_sizes(sizes: list[int]) -> bytes:
    return array("I", sizes).tobytes()


def split_chunk(sizes_blob: bytes, body: bytes) -> list[bytes]:
    """The records of a chunk; ValueError when the sizes do not add up to the body (the tenant can write its
    own inbox, so a chunk is read like any input)."""
    if len(sizes_blob) % 4 or len(sizes_blob) > 4 * MAX_CHUNK_RECORDS:
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


# --- envelopes: several records in one message, numbered by our publisher ----------------------------------


@dataclass(frozen=True)
class Envelope:
    publisher: str  # 16 hex digits, new for each run of the publisher
    first: int  # the number of its first record (the publisher's line counter)
    sizes: tuple[int, ...]
    body: bytes


def encode_envelope(publisher: str, first: int, records: list[bytes]) -> bytes:
    sizes = ",".join(str(len(r)) for r in records)
    return ENVELOPE_MAGIC + f"{publisher} {first} {sizes}\n".encode() + b"".join(records)


def decode_envelope(payload: bytes) -> Envelope:
    """ValueError for anything that is not a well-formed envelope (sizes must add up to the body)."""
    if not payload.startswith(ENVELOPE_MAGIC):
        raise ValueError("not an envelope")
    end = payload.find(b"\n", 0, MAX_HEADER)
    if end < 0:
        raise ValueError("envelope header too long or not ended")
    parts = payload[len(ENVELOPE_MAGIC) : end].split(b" ")
    if len(parts) != 3 or not _PUBLISHER.fullmatch(parts[0]) or not parts[1].isdigit() or len(parts[1]) > 18:
        raise ValueError("bad envelope header")
    raw = parts[2].split(b",")
    if not 1 <= len(raw) <= MAX_ENVELOPE_RECORDS or not all(s.isdigit() and len(s) <= 9 for s in raw):
        raise ValueError("bad envelope sizes")
    sizes = tuple(int(s) for s in raw)
    if 0 in sizes:
        raise ValueError("an empty record in an envelope")
    body = payload[end + 1 :]
    if sum(sizes) != len(body):
        raise ValueError("envelope sizes do not match its body")
    return Envelope(parts[0].decode(), int(parts[1]), sizes, body)
