"""Pure logic, no services: the one record reader (mysimbdp/csvrecords.py) against Python's csv module,
which every tenant app parses with. Files of several MiB full of stray quotes, quoted line breaks, CRLF,
lone CRs and BOMs are cut for 2 to 7 processes, read range by range and compared record by record (line
numbers included) with the csv module reading the whole file: there must be no difference at all."""

from __future__ import annotations

import csv
import io
import random

import pytest

from mysimbdp import csvrecords

PIECES = [
    "a",
    "b",
    "12",
    ",",
    '"',
    '""',
    "\n",
    "\r\n",
    "\r",
    'x"y',
    'N5"X',
    '"q,\nq"',
    '"q""q"',
    '"a"b',
    " ",
    "\t",
    "é",
    "\x00",
]


def whole(path: str) -> list[tuple[int, list[str]]]:
    """What the csv module reads from the whole file: (line the record ends on, fields), header skipped."""
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
        reader = csv.reader(fh, csvrecords.dialect_for(path))
        out = [(reader.line_num, rec) for rec in reader if rec]
    return out[1:]


def cut(path: str, parts: int) -> list[tuple[int, list[str]]]:
    delimiter = csvrecords.delimiter_for(path)
    got = []
    for r in csvrecords.ranges(path, parts, delimiter):
        got.extend(csvrecords.read_range(path, r))
    return got


def random_text(rng: random.Random, records: int, weights: list[float]) -> str:
    out = []
    for _ in range(records):
        out.append("".join(rng.choices(PIECES, weights, k=rng.randint(1, 12))))
        out.append(rng.choice(["\n", "\n", "\n", "\r\n"]))
    return "".join(out)


@pytest.mark.parametrize("seed", range(6))
def test_multi_mib_files_cut_for_several_processes_read_exactly_as_the_csv_module_reads_them(tmp_path, seed):
    rng = random.Random(seed)
    # few quotes (most real files), then many: stray quotes flip a parity count, not this reader
    weights = [8, 8, 8, 6, 1 + seed, 1, 3, 1, 0.2, 1, 1, 1, 1, 1, 1, 1, 0.5, 0.1]
    body = random_text(rng, 250_000, weights)
    name = "f.tsv" if seed % 3 == 2 else "f.csv"
    bom = "\ufeff" if seed % 2 else ""
    path = tmp_path / name
    path.write_bytes((bom + 'id,"note\nnote",x\n' + body).encode("utf-8"))
    assert path.stat().st_size > 2 << 20
    expect = whole(str(path))
    for parts in range(2, 8):
        got = cut(str(path), parts)
        assert got == expect, (
            f"parts={parts}: first difference at {next(i for i, (a, b) in enumerate(zip(got, expect)) if a != b)}"
        )


def test_many_small_random_files_every_cut_and_every_record_end(tmp_path):
    rng = random.Random(99)
    path = tmp_path / "x.csv"
    for _ in range(3000):
        text = "h1,h2\n" + "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 40)))
        data = (("\ufeff" if rng.random() < 0.2 else "") + text).encode()
        path.write_bytes(data)
        expect = whole(str(path))
        for parts in (2, 3, 5, 11):
            assert cut(str(path), parts) == expect, data
        # record_ends: the csv module, fed the file one line at a time, completes a record exactly there
        with open(path, "rb") as fh:
            ends = list(csvrecords.record_ends(fh))
        assert ends == csv_record_ends(data), data


def csv_record_ends(data: bytes) -> list[int]:
    """Byte offsets after each line feed at which the csv module has completed a record, and the end."""
    lines = data.splitlines(keepends=True)  # \n, \r\n and \r: what a text file opened with newline='' gives
    offsets, pos = [], 0
    for ln in lines:
        pos += len(ln)
        offsets.append(pos)
    text_lines = [ln.decode("utf-8", "replace") for ln in lines]
    if text_lines and text_lines[0].startswith("\ufeff"):
        text_lines[0] = text_lines[0][1:]
    ends = []
    reader = csv.reader(iter(text_lines))
    done = 0
    for _ in reader:
        done = reader.line_num
        ends.append(offsets[done - 1])
    out = [e for e in ends if data[e - 1 : e] == b"\n"]
    if data and (not out or out[-1] < len(data)):
        out.append(len(data))
    return out


def test_records_one_message_each_as_the_csv_module_reads_them():
    data = ('id,note\n1,"two\nlines"\r\n2,N5"X\n3,"a ""quoted"" word"\n\n4,"open\n' + "x" * 50 + "\n5,last").encode()
    recs = list(csvrecords.records(io.BytesIO(data), max_bytes=40))
    assert [(n, r) for n, r in recs[:4]] == [
        (1, b"id,note"),
        (2, b'1,"two\nlines"'),
        (4, b'2,N5"X'),
        (5, b'3,"a ""quoted"" word"'),
    ]
    assert recs[4] == (6, b"")  # an empty line is an empty record (the publisher skips it)
    assert recs[5] == (7, None)  # the quote left open runs to the end: too large for one message
    for _, rec in recs[:4]:
        assert len(next(csv.reader(io.StringIO(rec.decode(), newline="")))) == 2


def test_a_range_that_does_not_end_at_a_record_end_is_refused_not_misread(tmp_path):
    path = tmp_path / "q.csv"
    path.write_bytes(b'h\n"a\nb"\nc\n')
    wrong = csvrecords.Range(start=2, end=5, first_line=2, last=False)  # cuts inside the quoted field
    with pytest.raises(csvrecords.CutError):
        list(csvrecords.read_range(str(path), wrong))
