"""Checking a file's content against its declared format, as the bytes stream by.

Used on both sides: fetchdata checks a file before sending it, the upload API checks every byte it
receives. Constant memory: the whole stream is checked for NUL bytes and UTF-8 validity; the first 64 KiB
are parsed (CSV/TSV: a header row of distinct, non-empty names and at least one record; JSON lines: one
object per line).
"""

from __future__ import annotations

import codecs
import csv
import io
from . import bounded
from .errors import ConstraintViolation

SAMPLE = 64 * 1024


class ContentChecker:
    def __init__(self, fmt: str, name: str = "the file") -> None:
        self.fmt = fmt
        self.name = name
        self.size = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self._sample = bytearray()

    def _bad(self, why: str) -> ConstraintViolation:
        return ConstraintViolation(f"{self.name}: {why}")

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        if b"\0" in chunk:
            raise self._bad(f"is not a {self.fmt.upper()} text file (it contains NUL bytes: binary data?)")
        try:
            self._decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            raise self._bad(f"is not valid UTF-8 text near byte {self.size + exc.start}") from None
        if len(self._sample) < SAMPLE:
            self._sample += chunk[: SAMPLE - len(self._sample)]
        self.size += len(chunk)

    def finish(self) -> None:
        if self.size == 0:
            raise self._bad("is empty")
        try:
            self._decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise self._bad("ends in the middle of a UTF-8 character") from None
        text = bytes(self._sample).decode("utf-8", "ignore").lstrip("\ufeff")
        truncated = self.size > len(self._sample)
        if self.fmt in ("csv", "tsv"):
            self._check_delimited(text, truncated)
        elif self.fmt == "jsonl":
            self._check_jsonl(text, truncated)

    def _check_delimited(self, text: str, truncated: bool) -> None:
        if truncated:  # drop the last, possibly cut, line of the sample
            text = text[: max(text.rfind("\n"), 0)]
        dialect = csv.excel_tab if self.fmt == "tsv" else csv.excel
        try:
            rows = list(csv.reader(io.StringIO(text, newline=""), dialect))
        except csv.Error as exc:
            if not truncated:
                raise self._bad(f"does not parse as {self.fmt.upper()}: {exc}") from None
            rows = []
        if not rows or not any(f.strip() for f in rows[0]):
            raise self._bad("has no header row (the first line must name the columns)")
        header = [h.strip() for h in rows[0]]
        if any(not h for h in header):
            raise self._bad("has an empty column name in its header row")
        if len(set(h.lower() for h in header)) != len(header):
            raise self._bad("has duplicate column names in its header row")
        if len(rows) < 2 and not truncated:
            raise self._bad("has a header row but no data rows")

    def _check_jsonl(self, text: str, truncated: bool) -> None:
        lines = text.split("\n")  # not splitlines(): U+2028 and friends may stand in a JSON string
        if truncated and lines:
            lines = lines[:-1]
        good = 0
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:  # bounded: a line nested a thousand deep is not an object, not a crash
                if not isinstance(bounded.loads_json(line, max_bytes=SAMPLE * 4, max_depth=64), dict):
                    raise ValueError
            except ValueError:
                raise self._bad(f"line {n} is not a JSON object") from None
            good += 1
        if not good:
            raise self._bad("has no JSON object lines")
