"""Pure logic, no services: where records begin and end, as fetchdata's splitter and the SDK's parallel
reader see it, must agree with Python's csv module (which the tenant apps parse with)."""

from __future__ import annotations

import csv
import random
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tenant_apps" / "sdk"))

from fetchdata import sources  # noqa: E402
from mysimbdp_app import batch as sdk_batch  # noqa: E402
from mysimbdp_app.records import Rejected, Table  # noqa: E402

PIECES = ["a", "b", ",", '"', "\n", "\r\n", 'x"y', '""', '"q,\nq"', 'N5"X']


def csv_record_ends(data: bytes) -> list[int]:
    """Byte offsets at which Python's csv module completes a record (fed one line at a time)."""
    lines = data.split(b"\n")
    lines = [ln + b"\n" for ln in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
    consumed, ends = [0], []

    def feed():
        for ln in lines:
            consumed[0] += len(ln)
            yield ln.decode()

    for _ in csv.reader(feed()):
        ends.append(consumed[0])
    return ends


def test_record_ends_agree_with_the_csv_module_stray_quotes_included(tmp_path):
    rng = random.Random(7)
    f = tmp_path / "x.csv"
    for _ in range(2000):
        text = "h1,h2\n" + "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 30)))
        data = (text if text.endswith("\n") else text + "\n").encode()
        f.write_bytes(data)
        try:
            expect = csv_record_ends(data)
        except csv.Error:  # e.g. end of data inside quotes: csv gives up, so may we
            continue
        assert set(sources.record_ends(f)) == set(expect), data


def test_a_stray_quote_does_not_stop_a_file_from_being_split(tmp_path):
    f = tmp_path / "stray.csv"
    quote = '"'
    rows = [f"{i},N{i}{quote if i == 3 else ''}X,2013\n" for i in range(60)]
    f.write_text("id,tailnum,year\n" + "".join(rows))
    parts = sources.split(f, 200)
    assert len(parts) > 1
    got = b"".join(b"".join(p.chunks())[len(p.prefix) :] for p in parts)
    assert got == f.read_bytes()[len("id,tailnum,year\n") :]
    assert all(p.size <= 200 for p in parts)


def test_parallel_ranges_report_the_physical_line_of_each_record(tmp_path):
    f = tmp_path / "big.csv"
    rng = random.Random(3)
    body = []
    for i in range(3000):
        note = '"two\nlines"' if rng.random() < 0.1 else "plain"
        body.append(f"{i},{note}\n")
    f.write_text("id,note\n" + "".join(body))
    expect = []
    with open(f, newline="") as fh:
        reader = csv.reader(fh)
        next(reader)
        for rec in reader:
            expect.append((reader.line_num, rec))
    got = []
    for r in sdk_batch.ranges(str(f), 3):
        got.extend(sdk_batch._range_records(str(f), r))
    assert got == expect


FLIGHTS = Table(
    name="flights",
    columns=[("carrier", "text"), ("flight", "int"), ("dep_time", "int"), ("delay", "double")],
    primary_key="((carrier), flight)",
)


@pytest.mark.parametrize(
    "record, fragment",
    [
        (["UA", "15_45", "517", "1.5"], "column flight"),
        (["UA", "1545", "5_17", "1.5"], "column dep_time"),
        (["UA", "1545", "517", "1_0.5"], "column delay"),
        (["X" * 70000, "1545", "517", "1.5"], "longer than Cassandra's 65535 bytes"),
    ],
)
def test_rows_cassandra_or_a_reader_would_take_wrongly_are_rejected(record, fragment):
    convert = FLIGHTS.converter(["carrier", "flight", "dep_time", "delay"])
    assert convert(["UA", "1545", "517", "1.5"]) == ("UA", 1545, 517, 1.5)
    with pytest.raises(Rejected, match=fragment):
        convert(record)
