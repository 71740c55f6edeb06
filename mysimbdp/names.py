"""Strict patterns for every identifier that reaches CQL, a path, a topic or a container name.

A tenant name becomes a keyspace, a Cassandra role, an MQTT topic prefix and user, a folder and a
container label, so it must be valid and harmless in all of them at once.
"""

from __future__ import annotations

import re
import unicodedata

from .errors import InvalidName

#: lower-case letter first, then lower-case letters, digits, underscores; 3 to 32 characters.
TENANT_PATTERN = re.compile(r"[a-z][a-z0-9_]{2,31}")
#: names a tenant may not take: Cassandra's own keyspaces and roles, the platform's, the broker's.
RESERVED_PREFIXES = ("system", "mysimbdp", "cassandra", "dse", "solr", "operator", "svc", "app")

#: the scratch keyspace, role and broker namespace of one dry run of a tenant app (mysimbdp/dryrun.py). It is
#: a valid tenant name, so that the broker's topics and users for tenants fit it; `tenant create` refuses
#: names with this prefix, so no tenant ever has one.
SCRATCH_PREFIX = "dryrun_"
SCRATCH_PATTERN = re.compile(r"dryrun_[0-9a-f]{12}")

#: CQL identifiers a tenant app may create (tables, columns) are checked by the app SDK with this.
CQL_IDENTIFIER = re.compile(r"[a-z][a-z0-9_]{0,47}")

#: a stream name under a tenant's topic prefix: no wildcards, no slashes, no '$'.
STREAM_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

MAX_FILE_NAME = 200


def tenant(name: object) -> str:
    """Return ``name`` if it is a valid tenant name, else raise :class:`InvalidName`."""
    if not isinstance(name, str) or not name:
        raise InvalidName("tenant name is empty", hint="use 3-32 characters: a-z, 0-9, _")
    if not TENANT_PATTERN.fullmatch(name):
        raise InvalidName(
            f"invalid tenant name {name!r}",
            hint="use 3-32 characters: lower-case letters, digits and _, starting with a letter",
        )
    if name.startswith(RESERVED_PREFIXES):
        raise InvalidName(
            f"tenant name {name!r} is reserved",
            hint="pick a name that does not start with " + ", ".join(RESERVED_PREFIXES),
        )
    return name


def new_tenant(name: object) -> str:
    """Return ``name`` if a new tenant may take it: a valid tenant name that is not a dry run's scratch name."""
    name = tenant(name)
    if name.startswith(SCRATCH_PREFIX):
        raise InvalidName(
            f"tenant name {name!r} is reserved for dry runs", hint=f"pick a name not starting with {SCRATCH_PREFIX}"
        )
    return name


def scratch(name: object) -> str:
    """Return ``name`` if it is a dry run's scratch name (see SCRATCH_PATTERN), else raise."""
    if not isinstance(name, str) or not SCRATCH_PATTERN.fullmatch(name):
        raise InvalidName(f"invalid scratch keyspace name {name!r}")
    return name


def cql_identifier(name: object) -> str:
    """Return ``name`` if it is a safe unquoted CQL identifier (table, column), else raise."""
    if not isinstance(name, str) or not CQL_IDENTIFIER.fullmatch(name):
        raise InvalidName(f"invalid CQL identifier {name!r}", hint="use a-z, 0-9 and _, starting with a letter")
    return name


def stream(name: object) -> str:
    """Return ``name`` if it is a valid stream (sub-topic) name, else raise."""
    if not isinstance(name, str) or not STREAM_PATTERN.fullmatch(name):
        raise InvalidName(
            f"invalid stream name {name!r}", hint="use up to 64 letters, digits, '_', '.', '-'; no '/', '#', '+' or '$'"
        )
    return name


def safe_file_name(raw: object) -> str:
    """Normalise an uploaded file name, or refuse it.

    Refused: empty names, absolute paths, any path component ('..', '/', '\\'), control characters and
    line or paragraph separators (U+2028, U+2029: they split a log line for many readers),
    hidden files (leading '.'), names longer than 200 bytes. Unicode is normalised to NFC; spaces and
    other printable characters are kept, because a tenant will look for its file under its own name.
    """
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidName("file name is empty")
    name = unicodedata.normalize("NFC", raw)
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:[\\/]", name):
        raise InvalidName(f"file name {raw!r} is an absolute path", hint="send the bare file name")
    if "/" in name or "\\" in name:
        raise InvalidName(f"file name {raw!r} contains a path", hint="send the bare file name")
    if any(unicodedata.category(ch)[0] == "C" or unicodedata.category(ch) in ("Zl", "Zp") for ch in name):
        raise InvalidName(f"file name {raw!r} contains control characters or line breaks")
    if name in (".", "..") or name.startswith("."):
        raise InvalidName(f"file name {raw!r} is hidden or a relative path", hint="rename it without a leading '.'")
    if name != name.strip():
        raise InvalidName(f"file name {raw!r} starts or ends with spaces")
    if len(name.encode("utf-8")) > MAX_FILE_NAME:
        raise InvalidName(f"file name {raw[:40]!r}... is longer than {MAX_FILE_NAME} bytes")
    return name
