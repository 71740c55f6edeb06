"""What fetchdata sends: whole files, or parts of a too-large CSV/TSV file.

A part is the file's header followed by a byte range of whole records, so no temporary files are written.
Records are found by scanning the file once with the platform's one record reader (mysimbdp/csvrecords.py),
which ends records where Python's csv module does: a quoted field with line breaks in it is never cut, and
a stray quote in an unquoted field (``N5"X``) is only a character.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from mysimbdp import csvrecords

BLOCK = 1 << 20


@dataclass(frozen=True)
class Source:
    """Bytes to upload under ``name``: ``prefix`` then ``path[start:end]``."""

    name: str
    path: Path
    start: int
    end: int
    prefix: bytes = b""
    sha256: str = ""
    stamp: tuple[int, int] = (0, 0)  # the file's size and modification time when it was planned

    @property
    def size(self) -> int:
        return len(self.prefix) + self.end - self.start

    def changed(self) -> bool:
        """Whether the file is no longer what was planned (and checksummed)."""
        try:
            return _stamp(self.path) != self.stamp
        except OSError:
            return True

    def chunks(self, offset: int = 0, block: int = BLOCK) -> Iterator[bytes]:
        """The bytes from ``offset`` on."""
        if offset < len(self.prefix):
            yield self.prefix[offset:]
            offset = len(self.prefix)
        pos = self.start + offset - len(self.prefix)
        with open(self.path, "rb") as fh:
            fh.seek(pos)
            while pos < self.end:
                data = fh.read(min(block, self.end - pos))
                if not data:
                    raise OSError(f"{self.path} changed while being sent")
                pos += len(data)
                yield data

    def with_checksum(self) -> "Source":
        h = hashlib.sha256()
        for chunk in self.chunks():
            h.update(chunk)
        return Source(self.name, self.path, self.start, self.end, self.prefix, h.hexdigest(), self.stamp)


def whole(path: Path) -> Source:
    stamp = _stamp(path)
    return Source(path.name, path, 0, stamp[0], stamp=stamp)


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


class CannotSplit(Exception):
    pass


def split(path: Path, limit: int) -> list[Source]:
    """Parts of ``path`` of at most ``limit`` bytes each, each starting with the header record. Records
    end where Python's csv module ends them (mysimbdp/csvrecords.py), so no part cuts a quoted field."""
    stamp = _stamp(path)
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
