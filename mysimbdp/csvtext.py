"""Where CSV records end, read the way Python's csv module (and so every tenant app) reads them, found
without parsing every field: used to split files (fetchdata) and to cut a stream into messages
(mysimbdp-publish).

A quote opens a quoted field only at the start of a field; elsewhere (``N5"X``) it is a literal
character. Lines without a quote, nearly all of them, cost one ``in`` test in the callers.
"""

from __future__ import annotations

_START, _FIELD, _QUOTED, _QUOTE_IN_QUOTED = range(4)
_QUOTE, _CR, _LF = ord('"'), ord("\r"), ord("\n")


def still_quoted(line: bytes, quoted: bool, delimiter: bytes = b",") -> bool:
    """Whether a quoted field is still open at the end of ``line`` (``quoted``: it was at its start)."""
    if b'"' not in line:
        return quoted
    sep = delimiter[0]
    state = _QUOTED if quoted else _START
    for b in line:
        if state == _QUOTED:
            if b == _QUOTE:
                state = _QUOTE_IN_QUOTED
        elif b == sep or b == _CR or b == _LF:
            state = _START
        elif state == _START:
            state = _QUOTED if b == _QUOTE else _FIELD
        elif state == _QUOTE_IN_QUOTED:
            state = _QUOTED if b == _QUOTE else _FIELD  # "" is a quote; anything else closes the field
    return state == _QUOTED


def delimiter_for(name: str) -> bytes:
    return b"\t" if name.lower().endswith(".tsv") else b","
