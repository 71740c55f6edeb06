"""Reading what a tenant, or a tenant's app, sent or left behind: every read is bounded in size, depth, count
and time before anything is parsed, and a failure to read is a ``ValueError`` or ``OSError`` the caller
turns into the tenant's failure, never an exception that takes a platform process down.

docs/security.md lists every place where tenant bytes meet platform code, and the bound each one has.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

# a string, or an unterminated one up to the end (linear: an unterminated string is never rescanned)
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*+(?:"|\Z)', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


class TooLarge(ValueError):
    """Larger than its bound."""


def loads_json(data: bytes | str, *, max_bytes: int, max_depth: int = 32) -> object:
    """``json.loads``, after checking the size and the nesting depth (brackets outside strings), so that a
    hostile document raises ValueError, never RecursionError or a huge allocation."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if len(raw) > max_bytes:
        raise TooLarge(f"it is larger than {_size(max_bytes)}")
    brackets = _STRINGS.sub(b"", raw).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for b in brackets:
        depth += 1 if b in b"[{" else -1
        if depth > deepest:
            deepest = depth
            if deepest > max_depth:
                raise ValueError(f"it is nested deeper than {max_depth} levels")
    try:
        return json.loads(raw)
    except RecursionError:  # not expected after the check above; never let it through
        raise ValueError(f"it is nested deeper than {max_depth} levels") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"it is not UTF-8: {exc.reason}") from None


def open_regular(path: Path) -> int:
    """A read-only descriptor on ``path`` if it is a regular file: not a symbolic link (to somewhere else),
    a FIFO (which would block the reader), a device or a folder. OSError otherwise."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, f"{path.name} is not a regular file")
    return fd


def read_regular(path: Path, limit: int) -> bytes:
    """At most ``limit`` bytes of a regular file; TooLarge if there are more."""
    with os.fdopen(open_regular(path), "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"it is larger than {_size(limit)}")
    return data


def copy_head(src: Path, dst: Path, limit: int, mode: int = 0o640) -> tuple[int, bool]:
    """Copy at most ``limit`` bytes of the regular file ``src`` into a new file ``dst`` with ``mode`` (never
    the source's mode or owner: a tenant's file may be set-uid and world-writable). When ``src`` is larger,
    the copy ends at its last whole line within ``limit``. Return (bytes kept, whether that is all of it)."""
    with os.fdopen(open_regular(src), "rb") as fh:
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        kept, last_newline = 0, 0
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)  # whatever the umask
            while kept < limit:
                block = fh.read(min(1 << 20, limit - kept))
                if not block:
                    return kept, True
                out.write(block)
                nl = block.rfind(b"\n")
                if nl >= 0:
                    last_newline = kept + nl + 1
                kept += len(block)
            whole = not fh.read(1)
            if not whole:
                out.truncate(last_newline)
                kept = last_newline
        return kept, whole


def has_lines(path: Path, lines: int = 2, scan: int = 1 << 20) -> bool:
    """Whether a regular file has at least ``lines`` lines within its first ``scan`` bytes (a header and
    one row, say); False for anything that is not a regular file."""
    try:
        fd = open_regular(path)
    except OSError:
        return False
    with os.fdopen(fd, "rb") as fh:
        seen = 0
        while seen < scan:
            block = fh.read(min(64 * 1024, scan - seen))
            if not block:
                return False
            lines -= block.count(b"\n")
            if lines <= 0:
                return True
            seen += len(block)
    return False


def tail(path: Path, scan: int) -> bytes:
    """The last ``scan`` bytes of a regular file (a log of any size is never read whole); OSError if it is
    not one."""
    with os.fdopen(open_regular(path), "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        fh.seek(max(0, size - scan))
        return fh.read(scan)


def last_line(path: Path | None, scan: int = 4096, width: int = 300) -> str:
    """The last non-empty line of a regular file, printable characters only, at most ``width`` of them."""
    if path is None:
        return ""
    try:
        text = tail(path, scan).decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return printable(lines[-1] if lines else "", width)


def printable(text: str, width: int = 300) -> str:
    """``text`` without control characters (no terminal escapes in a receipt or a log line), cut to ``width``."""
    if len(text) <= width and text.isprintable():
        return text
    return "".join(ch for ch in text[: width * 4] if ch.isprintable())[:width]


@dataclass(frozen=True)
class TreeSize:
    bytes: int
    entries: int
    too_many: bool  # more entries, or deeper, than allowed: the walk stopped there

    def over(self, max_bytes: int) -> bool:
        return self.too_many or self.bytes > max_bytes


def tree_size(root: Path, *, max_entries: int = 10_000, max_depth: int = 32) -> TreeSize:
    """The apparent size of everything under ``root`` (sparse files count in full), without recursion and
    without following symbolic links; stops at ``max_entries`` entries or ``max_depth`` levels."""
    total = entries = 0
    stack: list[tuple[str, int]] = [(str(root), 0)]
    while stack:
        folder, depth = stack.pop()
        try:
            with os.scandir(folder) as it:
                for entry in it:
                    entries += 1
                    if entries > max_entries:
                        return TreeSize(total, entries, True)
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError as exc:
                        if exc.errno == errno.ENAMETOOLONG:
                            return TreeSize(total, entries, True)
                        continue  # gone meanwhile
                    total += st.st_size
                    if stat.S_ISDIR(st.st_mode):
                        if depth + 1 > max_depth:
                            return TreeSize(total, entries, True)
                        stack.append((entry.path, depth + 1))
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:
                return TreeSize(total, entries, True)
            continue  # gone, or not a folder any more
    return TreeSize(total, entries, False)


def remove_tree(root: Path) -> None:
    """Delete ``root`` and everything in it, however deep or wide, without recursion, without following
    symbolic links, and with three open descriptors at most: each sub-folder is moved up into ``root``
    under a fresh name before it is emptied, so no path ever grows long. Interrupted, it leaves only
    ``root`` with fewer things in it, and running it again finishes the job."""
    try:
        st = os.lstat(root)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(root)
        return
    top = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        todo = _empty(top, top)
        while todo:
            name = todo.pop()
            try:
                fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=top)
            except FileNotFoundError:
                continue
            try:
                todo.extend(_empty(fd, top))
            finally:
                os.close(fd)
            os.rmdir(name, dir_fd=top)
    finally:
        os.close(top)
    os.rmdir(root)


def _empty(fd: int, top: int) -> list[str]:
    """Unlink everything in folder ``fd`` but its sub-folders, which are moved into ``top`` (if ``fd`` is
    not ``top`` itself); return the sub-folders' names in ``top``. Passes over the folder until one finds
    nothing new (entries removed while a pass reads the folder may make it skip some)."""
    folders: list[str] = []
    kept: set[str] = set()  # sub-folders of top, which stay where they are
    while True:
        changed = False
        with os.scandir(fd) as it:
            for entry in it:
                name = entry.name
                if name in kept:
                    continue
                try:
                    mode = os.lstat(name, dir_fd=fd).st_mode
                except FileNotFoundError:
                    continue
                changed = True
                if not stat.S_ISDIR(mode):
                    os.unlink(name, dir_fd=fd)
                elif fd == top:
                    kept.add(name)
                    folders.append(name)
                else:
                    moved = f".rm-{uuid.uuid4().hex}"
                    os.rename(name, moved, src_dir_fd=fd, dst_dir_fd=top)
                    folders.append(moved)
        if not changed:
            return folders


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n >> 10} KiB"


class RateLimit:
    """A token bucket per key (a tenant, an instance, a client): ``burst`` at once, then ``per_second``.
    At most ``max_keys`` keys are remembered (the least recently used are forgotten), so a stream of new
    keys cannot grow it. Not thread-safe: one caller thread, or the caller's lock."""

    def __init__(self, per_second: float, burst: float, max_keys: int = 10_000) -> None:
        self.rate = per_second
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[object, list[float]] = OrderedDict()  # key -> [tokens, last time, refused]

    def allow(self, key: object, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        b = self._buckets.get(key)
        if b is None:
            b = self._buckets[key] = [self.burst, now, 0]
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            b[0] = min(self.burst, b[0] + (now - b[1]) * self.rate)
            b[1] = now
        if b[0] >= 1:
            b[0] -= 1
            return True
        b[2] += 1
        return False

    def refused(self, key: object) -> int:
        """How many were refused for ``key`` since the last call (then counts again from 0)."""
        b = self._buckets.get(key)
        if b is None:
            return 0
        n, b[2] = int(b[2]), 0
        return n
