"""The one CSV record reader: where records end, and the records themselves, exactly as Python's csv
module reads a file (the ``excel`` and ``excel_tab`` dialects, UTF-8 with a BOM skipped, opened with
``newline=''``), so that a file cut into uploads, messages or ranges for several processes gives the same
records, line numbers included, as reading it whole.

Used by fetchdata (cutting a large file into uploads), mysimbdp-publish (one record per message) and the
tenant app SDK (cutting a file for several processes). The SDK runs in the sandbox, where this file is
mounted read-only at ``/opt/mysimbdp/lib/mysimbdp/csvrecords.py``: it needs the standard library only.

How a record end is found without parsing every field: the csv module's state machine, reduced to what
decides whether a line break ends a record. A quote opens a quoted field only at the start of a field
(after a delimiter or a line break); anywhere else (``N5"X``) it is a literal character. Inside a quoted
field, ``""`` is a quote and a single ``"`` closes the field; what follows a closing quote up to the next
delimiter is read as unquoted text. Line breaks are ``\\n``, ``\\r\\n`` and a lone ``\\r``. Most lines
hold no quote at all and cost one ``find``.
"""

from __future__ import annotations

import csv
import io
import os
import re
import secrets
import sys
from dataclasses import dataclass
from typing import BinaryIO, Iterator

# every field may be as long as the file: the csv module's default of 128 KiB would raise in the middle
# of a record and then read the rest of that line as a new record, which no byte scanner can follow
csv.field_size_limit(sys.maxsize)

START, FIELD, QUOTED, CLOSED = range(
    4
)  # a field's start; in an unquoted field; in a quoted field; after its closing quote
BOM = b"\xef\xbb\xbf"
_CR, _LF, _QUOTE = 13, 10, 34
# from inside a quoted field to just after its closing quote (doubled quotes are part of the field)
_TO_CLOSING_QUOTE = re.compile(rb'[^"]*+(?:""[^"]*+)*+"')


def delimiter_for(name: str) -> bytes:
    """The delimiter of a file, by its name: tab for ``.tsv``, comma for everything else."""
    return b"\t" if name.lower().endswith(".tsv") else b","


def dialect_for(name: str) -> type[csv.Dialect]:
    return csv.excel_tab if name.lower().endswith(".tsv") else csv.excel


def advance(data: bytes, state: int = START, delimiter: int = 44) -> int:
    """The reader's state after ``data``, starting in ``state``."""
    pos, n = 0, len(data)
    while pos < n:
        if state == QUOTED:
            m = _TO_CLOSING_QUOTE.match(data, pos)
            if m is None:
                return QUOTED
            pos, state = m.end(), CLOSED
        elif state == CLOSED:
            c = data[pos]
            pos += 1
            if c == _QUOTE:
                state = QUOTED  # a doubled quote split over two calls
            elif c == delimiter or c == _CR or c == _LF:
                state = START
            else:
                state = FIELD  # "a"b reads as the text ab
        else:  # START or FIELD: the next quote decides
            q = data.find(b'"', pos)
            if q < 0:
                last = data[n - 1]
                return START if last == delimiter or last == _CR or last == _LF else FIELD
            if q > pos:
                prev = data[q - 1]
                opens = prev == delimiter or prev == _CR or prev == _LF
            else:
                opens = state == START
            state = QUOTED if opens else FIELD
            pos = q + 1
    return state


def _scan(fh: BinaryIO, delimiter: bytes, first: bool) -> Iterator[tuple[bytes, bool, int]]:
    """Each line of ``fh`` (split at line feeds, without a BOM), whether a record ends with it, and how many
    bytes of the file it took. ``first``: ``fh`` is at the start of the file (a BOM there is not data)."""
    delim = delimiter[0]
    state = START
    for line in fh:
        size = len(line)
        if first:
            first = False
            if line.startswith(BOM):
                line = line[3:]
        if state != QUOTED and state != CLOSED and b'"' not in line:
            state = START if line.endswith(b"\n") else advance(line, state, delim)
        else:
            state = advance(line, state, delim)
        yield line, state == START and line.endswith(b"\n"), size


def record_ends(fh: BinaryIO, start: int = 0, delimiter: bytes = b",") -> Iterator[int]:
    """Offsets just after each line feed that ends a record, from ``start`` (a record's start) on, and
    the end of the file when the last record has no line feed (or a quote left open runs to the end).

    Records are cut only at line feeds: a file whose lines end with a lone ``\\r`` is one long record here
    (correct, only not cut)."""
    fh.seek(start)
    pos = last = start
    for _, ends, size in _scan(fh, delimiter, start == 0):
        pos += size
        if ends:
            last = pos
            yield pos
    if pos > last:
        yield pos


def records(fh: BinaryIO, delimiter: bytes = b",", max_bytes: int | None = None) -> Iterator[tuple[int, bytes | None]]:
    """(line feeds before it + 1, the record's bytes without its final line break) for each record; a
    record longer than ``max_bytes`` comes as None and is not gathered (one of its lines is read at a time;
    the publisher runs on the tenant's own machine, over the tenant's own file)."""
    number, start_line, size = 0, 1, 0
    held: list[bytes] = []
    for line, ends, _ in _scan(fh, delimiter, True):
        number += 1
        if size == 0:
            start_line = number
        size += len(line)
        if max_bytes is None or size <= max_bytes + 2:
            held.append(line)
        else:
            held.clear()
        if ends:
            yield start_line, (b"".join(held).rstrip(b"\r\n") if held else None)
            held, size = [], 0
    if size:
        yield start_line, (b"".join(held).rstrip(b"\r\n") if held else None)


# --- ranges of a file for several processes ----------------------------------------------------------


@dataclass(frozen=True)
class Range:
    start: int  # byte offset of the first record
    end: int  # byte offset after the last record
    first_line: int  # the line number (as the csv module counts lines) the first record starts on
    last: bool  # ends at the end of the file


def _line_breaks(data: bytes) -> int:
    return data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n")


def header_end(path: str, delimiter: bytes = b",") -> int:
    """Offset just after the header record (which may itself hold quoted line breaks)."""
    with open(path, "rb") as fh:
        return next(record_ends(fh, 0, delimiter), 0)


def ranges(path: str, parts: int, delimiter: bytes = b",") -> list[Range]:
    """Up to ``parts`` ranges of whole records after the header, about equal in size, found in one pass
    over the bytes before the last cut."""
    size = os.path.getsize(path)
    start = header_end(path, delimiter)
    delim = delimiter[0]
    with open(path, "rb") as fh:
        head = fh.read(start)
        lines = _line_breaks(head)
        prev_cr = head.endswith(b"\r")
        state = START
        cuts: list[tuple[int, int]] = []
        pos = start
        for k in range(1, parts):
            target = start + (size - start) * k // parts
            while pos < target:  # whole blocks: state and line count
                block = fh.read(min(1 << 20, target - pos))
                if not block:
                    break
                state = advance(block, state, delim)
                lines += _line_breaks(block) - (1 if prev_cr and block[:1] == b"\n" else 0)
                prev_cr = block.endswith(b"\r")
                pos += len(block)
            cut = None
            for line in fh:  # on to the end of the record we are in
                state = advance(line, state, delim)
                lines += _line_breaks(line) - (1 if prev_cr and line[:1] == b"\n" else 0)
                prev_cr = line.endswith(b"\r")
                pos += len(line)
                if state == START and line.endswith(b"\n"):
                    cut = pos
                    break
            if cut is None or cut >= size:
                break
            if not cuts or cut > cuts[-1][0]:
                cuts.append((cut, lines + 1))
    first_line = _line_breaks(head) + 1
    bounds = [(start, first_line), *cuts, (size, 0)]
    return [Range(a, b, line, b == size) for (a, line), (b, _) in zip(bounds, bounds[1:]) if b > a]


class _Slice(io.RawIOBase):
    """Bytes [start, end) of a file, then ``tail``."""

    def __init__(self, path: str, start: int, end: int, tail: bytes = b"") -> None:
        self._fh = open(path, "rb")
        self._fh.seek(start)
        self._left = end - start
        self._tail = tail

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        view = memoryview(b)
        if self._left > 0:
            n = self._fh.readinto(view[: min(len(view), self._left)])
            if n:
                self._left -= n
                return n
            self._left = 0
        n = min(len(view), len(self._tail))
        view[:n] = self._tail[:n]
        self._tail = self._tail[n:]
        return n

    def close(self) -> None:
        self._fh.close()
        super().close()


class CutError(Exception):
    """A range did not end where a record ends: reading it alone would give other records than reading
    the file whole. (Never expected: it would mean this module and the csv module disagree.)"""


def read_header(path: str) -> list[str]:
    """The header record (an empty list for an empty file)."""
    end = header_end(path, delimiter_for(path))
    text = io.TextIOWrapper(io.BufferedReader(_Slice(path, 0, end)), encoding="utf-8-sig", errors="replace", newline="")
    with text:
        return next(csv.reader(text, dialect_for(path)), [])


def read_range(path: str, r: Range) -> Iterator[tuple[int, list[str]]]:
    """(line the record ends on, fields) for each non-empty record of ``r``; a record the csv module
    cannot read comes as (line, ["\\0csv-error", why]).

    A range that stops before the end of the file is read with a line of its own appended: if the range
    really ends where a record ends, that line comes back as a record of its own, and anything else raises
    :class:`CutError` instead of handing out a record that is not in the file."""
    sentinel = "" if r.last else f"mysimbdp-range-end-{secrets.token_hex(8)}"
    tail = f"{sentinel}\n".encode() if sentinel else b""
    text = io.TextIOWrapper(
        io.BufferedReader(_Slice(path, r.start, r.end, tail), 1 << 20), encoding="utf-8", errors="replace", newline=""
    )
    reader = csv.reader(text, dialect_for(path))
    offset = r.first_line - 1
    held: tuple[int, list[str]] | None = None  # one record behind, so that the sentinel is never handed out
    with text:
        while True:
            try:
                record = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                record = ["\0csv-error", str(exc)]
            if not record:
                continue
            if held is not None:
                yield held
            held = (offset + reader.line_num, record)
    if sentinel:
        if held is None or held[1] != [sentinel]:
            raise CutError(f"the range ending at byte {r.end} does not end where a record ends")
    elif held is not None:
        yield held
