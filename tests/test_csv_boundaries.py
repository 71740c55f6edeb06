"""Pure logic, no services: fetchdata's splitter on the one record reader (whose agreement with Python's
csv module is in test_csvrecords.py), and rows the SDK must refuse rather than store wrongly."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tenant_apps" / "sdk"))

from fetchdata import sources  # noqa: E402
from mysimbdp_app.records import Rejected, Table  # noqa: E402


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
