"""CSV records of a file, exactly as Python's csv module reads them (``excel`` / ``excel_tab``, UTF-8 with a
BOM skipped): a quoted field keeps its line breaks, and a quote inside an unquoted field (``N5"X``) is only a
character. The publisher sends one record per slot of an envelope, so a record must never be cut.

A copy of the platform's one record reader (``mysimbdp/csvrecords.py``: ``records`` and what it needs),
because the client is installed without the platform; ``tests/test_python_sdk.py`` checks that both read
the same records from the same bytes.
"""

from __future__ import annotations

import re
from typing import BinaryIO, Iterator

START, FIELD, QUOTED, CLOSED = range(4)  # a field's start; in an unquoted field; in a quoted field; after its closing quote
BOM = b"\xef\xbb\xbf"
_CR, _LF, _QUOTE = 13, 10, 34
_TO_CLOSING_QUOTE = re.compile(rb'[^"]*+(?:""[^"]*+)*+"')  # from inside a quoted field to just after it


def delimiter_for(name: str) -> bytes:
    """The delimiter of a file, by its name: tab for ``.tsv``, comma for everything else."""
    return b"\t" if name.lower().endswith(".tsv") else b","


def _advance(data: bytes, state: int, delimiter: int) -> int:
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
                state = QUOTED  # a doubled quote split over two lines
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


def records(fh: BinaryIO, delimiter: bytes = b",", max_bytes: int | None = None) -> Iterator[tuple[int, bytes | None]]:
    """(the record's first line number, its bytes without the final line break) for each record of ``fh``
    (at the start of the file); a record longer than ``max_bytes`` comes as None and is not gathered."""
    delim = delimiter[0]
    state = START
    first = True
    number, start_line, size = 0, 1, 0
    held: list[bytes] = []
    for line in fh:
        if first:
            first = False
            if line.startswith(BOM):
                line = line[3:]
        if state != QUOTED and state != CLOSED and b'"' not in line:
            state = START if line.endswith(b"\n") else _advance(line, state, delim)
        else:
            state = _advance(line, state, delim)
        ends = state == START and line.endswith(b"\n")
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
