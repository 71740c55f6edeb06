"""What fetchdata sends: whole files, or parts of a too-large CSV/TSV file.

A part is the file's header followed by a byte range of whole records, so no temporary files are written;
both are a :class:`mysimbdp_client.uploads.Source`, which the client SDK uploads.
Records are found by scanning the file once with the platform's one record reader (mysimbdp/csvrecords.py),
which ends records where Python's csv module does: a quoted field with line breaks in it is never cut, and
a stray quote in an unquoted field (``N5"X``) is only a character.
"""

from __future__ import annotations

from pathlib import Path

from mysimbdp import csvrecords
from mysimbdp_client.uploads import Source, file_stamp, whole

__all__ = ["CannotSplit", "Source", "split", "whole"]


class CannotSplit(Exception):
    pass


def split(path: Path, limit: int) -> list[Source]:
    """Parts of ``path`` of at most ``limit`` bytes each, each starting with the header record. Records
    end where Python's csv module ends them (mysimbdp/csvrecords.py), so no part cuts a quoted field."""
    stamp = file_stamp(path)
    with open(path, "rb") as fh, open(path, "rb") as head:
        ends = csvrecords.record_ends(fh, 0, csvrecords.delimiter_for(path.name))
        try:
            header_end = next(ends)
        except StopIteration:
            raise CannotSplit("the file is empty") from None
        header = head.read(header_end)
        if not header.endswith(b"\n"):
            header += b"\r\n" if header.endswith(b"\r") else b"\n"
        cuts = _cuts(ends, header_end, limit - len(header))
    stem, dot, ext = path.name.rpartition(".")
    if not dot:
        stem, ext = path.name, ""
    n = len(cuts)
    width = max(3, len(str(n)))
    return [
        Source(f"{stem}.part{i + 1:0{width}d}of{n:0{width}d}{dot}{ext}", path, a, b, header, stamp=stamp)
        for i, (a, b) in enumerate(cuts)
    ]


def _cuts(ends, start: int, room: int) -> list[tuple[int, int]]:
    """(start, end) byte ranges of whole records, each at most ``room`` bytes."""
    if room <= 0:
        raise CannotSplit("its header alone is larger than the maximum file size")
    cuts = []
    part_start = prev = start
    for end in ends:
        if end - part_start > room:
            if prev == part_start:
                raise CannotSplit(f"one record (near byte {part_start}) is larger than the maximum file size")
            cuts.append((part_start, prev))
            part_start = prev
            if end - part_start > room:
                raise CannotSplit(f"one record (near byte {part_start}) is larger than the maximum file size")
        prev = end
    if prev > part_start:
        cuts.append((part_start, prev))
    return cuts
