"""Values between JSON and CQL, by the column's CQL type.

In: a JSON value is checked against its column's type and turned into what the driver binds ("abc" for an
int is a :class:`BadValue` that names the column). Timestamps are ISO 8601 (``2013-01-01T05:00:00Z``; no
zone means UTC) or milliseconds since the epoch; dates ``YYYY-MM-DD``; blobs base64; uuids their text.

Out: timestamps ISO 8601 in UTC with milliseconds and ``Z``, dates ``YYYY-MM-DD``, decimals and
durations as strings (exact), blobs base64, sets and lists as arrays, maps as objects.

Each converter is chosen once per column (:func:`encoder`, :func:`decoder`), not per value: an export
runs them millions of times.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import ipaddress
import re
import uuid
from decimal import Decimal, InvalidOperation
from typing import Any, Callable

from mysimbdp.errors import BadValue

UTC = dt.timezone.utc
EPOCH = dt.datetime(1970, 1, 1)
_INT_RANGES = {
    "tinyint": (-(2**7), 2**7 - 1),
    "smallint": (-(2**15), 2**15 - 1),
    "int": (-(2**31), 2**31 - 1),
    "bigint": (-(2**63), 2**63 - 1),
    "counter": (-(2**63), 2**63 - 1),
    "varint": (-(10**100), 10**100),  # a bound all the same: a 10^6-digit number would cost seconds
}
_INT_TEXT = re.compile(r"-?[0-9]{1,101}")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_TIME = re.compile(r"[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?")
_TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?)?(Z|[+-][0-9]{2}:?[0-9]{2})?"
)
MAX_TEXT = 1 << 20  # one text value in a request (the body is bounded too)
#: types a value may be given for; others (tuples, user types) are read out but not written or filtered
SCALARS = {
    "ascii", "text", "varchar", "tinyint", "smallint", "int", "bigint", "varint", "counter", "float", "double",
    "decimal", "boolean", "timestamp", "date", "time", "uuid", "timeuuid", "blob", "inet",
}  # fmt: skip
#: types Storage-Attached Indexes serve range filters on (lt, lte, gt, gte)
RANGE_TYPES = {
    "tinyint", "smallint", "int", "bigint", "varint", "float", "double", "decimal", "timestamp", "date", "time",
}  # fmt: skip


def split_type(cql_type: str) -> tuple[str, list[str]]:
    """``map<text, frozen<list<int>>>`` -> ("map", ["text", "frozen<list<int>>"]); ``int`` -> ("int", [])."""
    t = cql_type.strip()
    if "<" not in t:
        return t.lower(), []
    head, inner = t[: t.index("<")].strip().lower(), t[t.index("<") + 1 : t.rindex(">")]
    parts, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur.strip())
    if head == "frozen":
        return split_type(parts[0])
    return head, parts


# --- JSON -> CQL ----------------------------------------------------------------------------------------


def encoder(cql_type: str, column: str) -> Callable[[Any], Any]:
    """A function that turns a JSON value into the value the driver binds for a column of ``cql_type``
    (None stays None), raising BadValue that names ``column``. Whatever else a value makes Python raise on
    the way (a float past its range, a date past year 9999 in UTC) is a BadValue too, never a 500."""
    inner = _encoder(cql_type, column)

    def guarded(v: Any) -> Any:
        try:
            return inner(v)
        except BadValue:
            raise
        except (ArithmeticError, ValueError, TypeError, OSError, UnicodeError):
            shown = repr(v)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise BadValue(f"column {column}: {shown} does not fit", hint=f"the column's type is {cql_type}") from None

    return guarded


def _encoder(cql_type: str, column: str) -> Callable[[Any], Any]:
    head, args = split_type(cql_type)

    def bad(value: Any, what: str) -> BadValue:
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        return BadValue(f"column {column}: {shown} is not {what}", hint=f"the column's type is {cql_type}")

    if head in ("ascii", "text", "varchar"):

        def text(v):
            if not isinstance(v, str):
                raise bad(v, "a string")
            if len(v) > MAX_TEXT:
                raise bad(v[:20], f"a string of at most {MAX_TEXT} characters")
            if head == "ascii" and not v.isascii():
                raise bad(v, "ASCII text")
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                raise bad(v, "text (it holds a lone surrogate, which UTF-8 cannot carry)") from None
            return v

        return _nullable(text)
    if head in _INT_RANGES:
        lo, hi = _INT_RANGES[head]

        def integer(v):
            if isinstance(v, str) and _INT_TEXT.fullmatch(v.strip()):
                v = int(v.strip())
            if isinstance(v, bool) or not isinstance(v, int):
                raise bad(v, f"an integer ({head})")
            if not lo <= v <= hi:
                raise bad(v, f"within {head}'s range")
            return v

        return _nullable(integer)
    if head in ("float", "double"):

        top = 3.4028234663852886e38 if head == "float" else 1.7976931348623157e308

        def real(v):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise bad(v, "a number")
            f = float(v)
            if not -top <= f <= top:
                raise bad(v, f"within {head}'s range")
            return f

        return _nullable(real)
    if head == "decimal":

        def decimal(v):
            if isinstance(v, bool) or not isinstance(v, (int, float, str)) or (isinstance(v, str) and len(v) > 100):
                raise bad(v, "a decimal number")
            try:
                d = Decimal(str(v))
            except InvalidOperation:
                raise bad(v, "a decimal number") from None
            if not d.is_finite() or not -(2**31) < d.as_tuple().exponent < 2**31 - 200:
                raise bad(v, "a finite decimal number within Cassandra's scale")
            return d

        return _nullable(decimal)
    if head == "boolean":

        def boolean(v):
            if not isinstance(v, bool):
                raise bad(v, "true or false")
            return v

        return _nullable(boolean)
    if head == "timestamp":
        return _nullable(lambda v: parse_timestamp(v, bad))
    if head == "date":

        def date(v):
            if not isinstance(v, str) or not _DATE.fullmatch(v):
                raise bad(v, "a date (YYYY-MM-DD)")
            try:
                return dt.date.fromisoformat(v)
            except ValueError:
                raise bad(v, "a date (YYYY-MM-DD)") from None

        return _nullable(date)
    if head == "time":

        def time_of_day(v):
            if not isinstance(v, str) or not _TIME.fullmatch(v):
                raise bad(v, "a time of day (HH:MM:SS[.ffffff], no zone)")
            try:
                return dt.time.fromisoformat(v)
            except ValueError:
                raise bad(v, "a time of day (HH:MM:SS[.ffffff])") from None

        return _nullable(time_of_day)
    if head in ("uuid", "timeuuid"):

        def uid(v):
            if not isinstance(v, str) or len(v) > 40:
                raise bad(v, "a UUID")
            try:
                u = uuid.UUID(v)
            except ValueError:
                raise bad(v, "a UUID") from None
            if head == "timeuuid" and u.version != 1:
                raise bad(v, "a time-based (version 1) UUID")
            return u

        return _nullable(uid)
    if head == "blob":

        def blob(v):
            if not isinstance(v, str):
                raise bad(v, "base64 text")
            try:
                return base64.b64decode(v, validate=True)
            except (binascii.Error, ValueError):
                raise bad(v, "base64 text") from None

        return _nullable(blob)
    if head == "inet":

        def inet(v):
            if not isinstance(v, str) or len(v) > 45 or "%" in v:
                raise bad(v, "an IP address (without a scope)")
            try:
                return str(ipaddress.ip_address(v))
            except ValueError:
                raise bad(v, "an IP address") from None

        return _nullable(inet)
    if head in ("list", "set") and len(args) == 1:
        item = encoder(args[0], column)

        def sequence(v):
            if not isinstance(v, list):
                raise bad(v, f"an array ({cql_type})")
            out = [item(x) for x in v]
            if any(x is None for x in out):
                raise bad(v, "an array without nulls")
            return set(out) if head == "set" and all(_hashable(x) for x in out) else out

        return _nullable(sequence)
    if head == "map" and len(args) == 2:
        key, value = encoder(args[0], column), encoder(args[1], column)
        key_head = split_type(args[0])[0]

        def mapping(v):
            if not isinstance(v, dict):
                raise bad(v, f"an object ({cql_type})")
            # JSON keys are strings: a map<int, ...> takes {"1": ...}
            conv = (lambda k: key(int(k) if _INT_TEXT.fullmatch(k) else k)) if key_head in _INT_RANGES else key
            return {conv(k): value(x) for k, x in v.items()}

        return _nullable(mapping)
    if head == "vector" and len(args) == 2 and args[1].isdigit():
        item, n = encoder(args[0], column), int(args[1])

        def vector(v):
            if not isinstance(v, list) or len(v) != n:
                raise bad(v, f"an array of {n} values")
            return [item(x) for x in v]

        return _nullable(vector)

    def unsupported(v):
        raise BadValue(f"column {column}: the API does not write or filter on type {cql_type}")

    return unsupported


def _nullable(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda v: None if v is None else fn(v)


def _hashable(x: Any) -> bool:
    try:
        hash(x)
        return True
    except TypeError:
        return False


def parse_timestamp(v: Any, bad: Callable[[Any, str], Exception]) -> dt.datetime:
    """ISO 8601 (a missing zone is UTC) or integer milliseconds since the epoch -> an aware UTC datetime."""
    what = "a timestamp (ISO 8601, e.g. 2013-01-01T05:00:00Z, or milliseconds since 1970)"
    if isinstance(v, bool):
        raise bad(v, what)
    if isinstance(v, int):
        try:
            return (EPOCH + dt.timedelta(milliseconds=v)).replace(tzinfo=UTC)
        except OverflowError:
            raise bad(v, what) from None
    if not isinstance(v, str) or not _TIMESTAMP.fullmatch(v):
        raise bad(v, what)
    try:
        t = dt.datetime.fromisoformat(v)
        return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    except (ValueError, OverflowError):
        raise bad(v, what) from None


# --- CQL -> JSON ----------------------------------------------------------------------------------------


def _iso_timestamp(v: dt.datetime) -> str:
    # the driver gives naive datetimes in UTC
    if v.tzinfo is not None:
        v = v.astimezone(UTC).replace(tzinfo=None)
    return v.isoformat(timespec="milliseconds") + "Z"


def _generic(v: Any) -> Any:
    """Any value the driver returns, as JSON (used inside collections, tuples and user types)."""
    if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
        return str(v)  # NaN and infinities are not JSON
    if isinstance(v, int) and not isinstance(v, bool) and v.bit_length() > 1000:
        return hex(v)  # past ~300 digits: hex, which costs linear time (decimal text of a huge int does not)
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    if isinstance(v, dt.datetime):
        return _iso_timestamp(v)
    if isinstance(v, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(v)).decode("ascii")
    if isinstance(v, dict) or hasattr(v, "items"):
        return {str(_generic(k)): _generic(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)) or hasattr(v, "__iter__"):
        return [_generic(x) for x in v]
    return str(v)  # Decimal, UUID, Date, Time, Duration, inet: their text is exact


def decoder(cql_type: str) -> Callable[[Any], Any] | None:
    """A function that turns a value read from a column of ``cql_type`` into JSON; None when the value is
    JSON already (text, integers, doubles, booleans), so that the hot path does nothing."""
    head, _ = split_type(cql_type)
    if head in ("ascii", "text", "varchar", "tinyint", "smallint", "int", "bigint", "counter", "boolean"):
        return None
    if head == "varint":
        return _generic
    if head in ("float", "double"):
        return lambda v: v if v is None or v == v and v not in (float("inf"), float("-inf")) else str(v)
    if head == "timestamp":
        return lambda v: None if v is None else _iso_timestamp(v)
    if head == "blob":
        return lambda v: None if v is None else base64.b64encode(v).decode("ascii")
    if head in ("decimal", "uuid", "timeuuid", "date", "time", "inet", "duration"):
        return lambda v: None if v is None else str(v)
    return _generic


def approx_size(v: Any) -> int:
    """About how many bytes a value read from Cassandra takes (what a page's budget counts)."""
    if isinstance(v, (str, bytes, bytearray)):
        return len(v) + 8
    if v is None or isinstance(v, (int, float, bool)):
        return 8
    if isinstance(v, dict) or hasattr(v, "items"):
        return 16 + sum(approx_size(k) + approx_size(x) for k, x in v.items())
    if isinstance(v, (list, tuple, set, frozenset)):
        return 16 + sum(approx_size(x) for x in v)
    return 16
