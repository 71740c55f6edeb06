"""The stream inbox's formats (pure): envelopes as mysimbdp-publish sends them and the inbox writer reads
them, chunks as the writer stores them and the tenant's instances read them (two copies of the reader:
the platform's and the helper library's, which must agree)."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

from mysimbdp import inbox

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tenant_apps" / "sdk"))
from mysimbdp_app import stream as sdk_stream  # noqa: E402


def test_an_envelope_comes_back_as_it_was_sent():
    records = [b"1,a,b", b'2,"x\ny",z', "3,é,ü".encode(), b"4" * 5000]
    env = inbox.decode_envelope(inbox.encode_envelope("0123456789abcdef", 41, records))
    assert (env.publisher, env.first, env.sizes) == ("0123456789abcdef", 41, tuple(len(r) for r in records))
    assert env.body == b"".join(records)
    assert inbox.split_chunk(inbox.pack_sizes(list(env.sizes)), env.body) == records


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"1,a,b",  # a plain record
        b"MB1 0123456789abcdef 1 3\nabcd",  # sizes do not add up
        b"MB1 0123456789abcdef 1 3\nab",
        b"MB1 0123456789ABCDEF 1 3\nabc",  # publisher id not lower-case hex
        b"MB1 0123456789abcde 1 3\nabc",  # 15 digits
        b"MB1 0123456789abcdef -1 3\nabc",
        b"MB1 0123456789abcdef 1 3,0\nabc",  # an empty record
        b"MB1 0123456789abcdef 1 " + b",".join([b"1"] * 5000) + b"\n" + b"x" * 5000,  # too many records
        b"MB1 0123456789abcdef 1 1" + b"0" * 70000,  # a header that never ends
        b"MB1 0123456789abcdef 99999999999999999999 1\nx",
        b"MB1 0123456789abcdef 1 1 extra\nx",
    ],
)
def test_a_bad_envelope_is_refused(payload):
    with pytest.raises(ValueError):
        inbox.decode_envelope(payload)


def test_both_chunk_readers_agree_and_refuse_what_does_not_add_up():
    rng = random.Random(7)
    for _ in range(200):
        records = [rng.randbytes(rng.randint(1, 300)) for _ in range(rng.randint(1, 50))]
        sizes, body = inbox.pack_sizes([len(r) for r in records]), b"".join(records)
        assert inbox.split_chunk(sizes, body) == sdk_stream.split_chunk(sizes, body) == records
    for sizes, body in ((b"\x01\x00\x00", b"x"), (inbox.pack_sizes([2]), b"x"), (b"\xff" * 4 * 5000, b"")):
        for split in (inbox.split_chunk, sdk_stream.split_chunk):
            with pytest.raises(ValueError):
                split(sizes, body)


def test_lanes_and_buckets():
    assert inbox.bucket(0) == 0 and inbox.bucket(inbox.BUCKET_US - 1) == 0 and inbox.bucket(inbox.BUCKET_US) == 1
    assert sdk_stream.LANES == inbox.LANES and sdk_stream.BUCKET_US == inbox.BUCKET_US


def test_inbox_tables_changed_by_their_tenant_are_found():
    good = [(t, c, k) for t, cols in inbox.COLUMNS.items() for c, k in cols.items()]
    assert inbox.schema_problem(good) is None
    assert inbox.schema_problem(good + [(inbox.INBOX_TABLE, "extra", "text")]) is None
    retyped = [(t, c, "text" if c == "body" else k) for t, c, k in good]
    assert inbox.schema_problem(retyped) == "mysimbdp_inbox.body is text, not blob"
    assert "missing" in inbox.schema_problem([r for r in good if r[0] != inbox.OFFSETS_TABLE])
