"""Logging tenants (and the operator) in to the platform's HTTP APIs.

* bcrypt check of the tenant's password against the hash in the platform keyspace, read afresh on every
  login, so a password change takes effect at once on every API;
* a short-lived cache of successful checks, keyed by a keyed hash of the password *and of the stored hash*
  (never the password): a client uploading many files does not pay bcrypt on every request, and a changed
  password misses the cache at once;
* a lock-out only the failing client feels: failures are counted per user name *and client address*;
  past ``max_failures`` within ``lockout`` seconds, that address is refused for that user (429 with
  Retry-After), even with the right password. Nobody else is: not the tenant's other clients, not other
  users behind the same address. A client whose right password passed in the last ``cache_seconds`` is
  never locked out;
* bcrypt costs CPU: one address has at most one check running at a time, and the API at most
  ``checks`` (the others wait a little, then get 429 "busy"); an unknown user costs the same bcrypt
  time as a known one, and a request without credentials is not a failure (it is how HTTP asks for them);
* every table here is bounded (a stream of made-up user names or addresses cannot grow it);
* a login is counted as a failure *before* its check and given back when the password was right, so that
  guesses sent at once cannot all pass the count; an API served by several worker processes counts them
  in one file all of them share (:class:`SharedLoginFailures`): a client gets ``max_failures`` tries
  within ``lockout`` seconds, however many connections and workers it spreads them over.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import sqlite3
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import credentials
from .errors import AuthenticationFailed, TenantNotFound, TooManyAttempts

log = logging.getLogger("mysimbdp.auth")
_DUMMY_HASH = credentials.hash_password("not-a-real-password")
OPERATOR = "operator"
MAX_USER = 64
MAX_PASSWORD = 1024
MAX_KEYS = 20_000


@dataclass(frozen=True)
class Principal:
    name: str  # the tenant's name, or "operator"
    is_operator: bool = False


class _Bounded(OrderedDict):
    """An LRU dict that forgets its oldest keys past ``limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def touch(self, key, default):
        if key in self:
            self.move_to_end(key)
            return self[key]
        self[key] = default
        if len(self) > self.limit:
            self.popitem(last=False)
        return default


class LoginFailures:
    """Failed logins of each (user, client) within the last ``window`` seconds, in this process.

    A login that is about to be checked *reserves* a failure first (:meth:`reserve`, refused once there are
    ``limit`` already) and gives it back when the password was right (:meth:`release`): count and record are
    one step, so guesses sent at once cannot all pass the count before any of them is recorded."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._lock = threading.Lock()
        self._fails: _Bounded = _Bounded(MAX_KEYS)  # (user, client) -> deque of (time, id)
        self._ids = 0

    def reserve(self, user: str, client: str, now: float, limit: int) -> tuple[object | None, float]:
        """(a token to release, 0) or, past ``limit``: (None, the time of the oldest failure counted)."""
        with self._lock:
            q = self._fails.touch((user, client), deque())
            while q and q[0][0] < now - self.window:
                q.popleft()
            if len(q) >= limit:
                return None, q[0][0]
            self._ids += 1
            q.append((now, self._ids))
            return self._ids, 0.0

    def release(self, user: str, client: str, token: object) -> None:
        with self._lock:
            q = self._fails.get((user, client))
            if q:
                for entry in q:
                    if entry[1] == token:
                        q.remove(entry)
                        break


class SharedLoginFailures(LoginFailures):
    """The same, in an SQLite file that every worker process of one API opens, so that the lock-out is the
    API's and not each worker's. The file failing (unreadable, locked for more than a second, a full disk)
    costs the sharing, never a login and never the lock-out: this process's own count stands in."""

    MAX_ROWS = 200_000

    def __init__(self, path: Path, window: float) -> None:
        super().__init__(window)  # also the stand-in when the file fails
        self._db_lock = threading.Lock()
        self._adds = 0
        self._db: sqlite3.Connection | None = None
        try:
            db = sqlite3.connect(str(path), timeout=1.0, isolation_level=None, check_same_thread=False)
            os.chmod(path, 0o600)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS failures (user TEXT, client TEXT, t REAL)")
            db.execute("CREATE INDEX IF NOT EXISTS by_key ON failures (user, client, t)")
            db.execute("CREATE INDEX IF NOT EXISTS by_time ON failures (t)")
            self._db = db
        except (sqlite3.Error, OSError) as exc:
            log.warning("login failures file %s unusable (%s): counted in this process only", path, exc)

    def reserve(self, user: str, client: str, now: float, limit: int) -> tuple[object | None, float]:
        if self._db is not None:
            try:
                with self._db_lock:
                    return self._reserve(user, client, now, limit)
            except sqlite3.Error as exc:
                log.warning("login failures file failed (%s): counted in this process", exc)
        token, oldest = super().reserve(user, client, now, limit)
        return (None if token is None else ("here", token)), oldest

    def _reserve(self, user: str, client: str, now: float, limit: int) -> tuple[object | None, float]:
        db = self._db
        assert db is not None
        db.execute("BEGIN IMMEDIATE")  # the count and the insert: one writer at a time, across processes
        try:
            rows = db.execute(
                "SELECT t FROM failures WHERE user = ? AND client = ? AND t >= ? ORDER BY t LIMIT ?",
                (user, client, now - self.window, limit),
            ).fetchall()
            if len(rows) >= limit:
                return None, rows[0][0]
            rowid = db.execute("INSERT INTO failures VALUES (?, ?, ?)", (user, client, now)).lastrowid
            db.execute("DELETE FROM failures WHERE t < ?", (now - self.window,))
            self._adds += 1
            if self._adds % 1000 == 0:  # made-up names from many addresses: the oldest go first
                (n,) = db.execute("SELECT count(*) FROM failures").fetchone()
                if n > self.MAX_ROWS:
                    db.execute(
                        "DELETE FROM failures WHERE rowid IN (SELECT rowid FROM failures ORDER BY t LIMIT ?)",
                        (n - self.MAX_ROWS // 2,),
                    )
            return ("file", rowid), 0.0
        finally:
            db.execute("COMMIT")

    def release(self, user: str, client: str, token: object) -> None:
        where, value = token  # type: ignore[misc]
        if where == "here":
            super().release(user, client, value)
            return
        try:
            with self._db_lock:
                assert self._db is not None
                self._db.execute("DELETE FROM failures WHERE rowid = ?", (value,))
        except sqlite3.Error as exc:  # the right password is counted as a failure: it may cost a lock-out
            log.warning("a login's reservation could not be released (%s)", exc)


class Authenticator:
    def __init__(
        self,
        lookup_hash: Callable[[str], str | None],
        *,
        max_failures: int = 5,
        lockout: float = 60,
        operator_password: str | None = None,
        cache_seconds: float = 300,
        checks: int = 2,
        wait_for_check: float = 5.0,
        failures: LoginFailures | None = None,
    ) -> None:
        """``lookup_hash(name)`` returns the tenant's bcrypt hash, or None for no such (ready) tenant."""
        self.lookup_hash = lookup_hash
        self.max_failures = max_failures
        self.lockout = lockout
        self.operator_password = operator_password
        self.cache_seconds = cache_seconds
        self.wait_for_check = wait_for_check
        self._key = os.urandom(32)
        self._lock = threading.Lock()
        self._ok: _Bounded = _Bounded(MAX_KEYS)  # (user, tag) -> expiry
        self._failures = failures or LoginFailures(lockout)
        self._checking: set[str] = set()  # clients with a bcrypt check running
        self._same: set[tuple[str, bytes]] = set()  # (user, password tag) being checked right now
        self._check_done = threading.Condition(self._lock)
        self._checks = threading.BoundedSemaphore(checks)

    # --- failures -------------------------------------------------------------------------------------
    def _reserve_failure(self, username: str, client: str) -> object:
        """Count this login as a failure before it is checked (:class:`LoginFailures`); TooManyAttempts when
        this client has used up its tries for this user."""
        now = time.time()  # a failure's time may come from another process: the wall clock
        token, oldest = self._failures.reserve(username, client, now, self.max_failures)
        if token is None:
            retry = int(oldest + self.lockout - now) + 1
            raise TooManyAttempts(
                "too many failed logins for this user from this client",
                retry_after=retry,
                hint=f"try again in {retry}s",
            )
        return token

    # --- bcrypt, rationed -----------------------------------------------------------------------------
    def _bcrypt(self, password: str, stored: str, client: str) -> bool:
        deadline = time.monotonic() + self.wait_for_check
        with self._check_done:
            while client in self._checking:
                left = deadline - time.monotonic()
                if left <= 0 or not self._check_done.wait(left):
                    raise TooManyAttempts(
                        "this client's logins are being checked already",
                        retry_after=1,
                        hint="wait for the answer before trying again",
                        code="login_busy",
                    )
            self._checking.add(client)
        try:
            if not self._checks.acquire(timeout=max(0.0, deadline - time.monotonic())):
                raise TooManyAttempts(
                    "the platform is busy checking logins",
                    retry_after=1,
                    hint="try again in a second",
                    code="login_busy",
                )
            try:
                return credentials.check_password(password, stored)
            finally:
                self._checks.release()
        finally:
            with self._check_done:
                self._checking.discard(client)
                self._check_done.notify_all()

    def _check_once(self, username: str, tag: bytes, password: str, stored: str | None, client: str) -> bool:
        """bcrypt, once for all the requests that bring the same password at the same moment (ten clients of
        one tenant starting together cost one check, not ten in a row)."""
        key = (username, tag)
        with self._check_done:
            while key in self._same:
                if not self._check_done.wait(self.wait_for_check):
                    break
            expiry = self._ok.get(key)
            if stored and expiry and expiry > time.monotonic():
                return True  # the check that was going on said yes
            self._same.add(key)
        ok = wrong = False
        try:
            # counted as a failure until the password proves right (or the check never ran: busy)
            token = self._reserve_failure(username, client)
            try:
                ok = self._bcrypt(password, stored or _DUMMY_HASH, client) and bool(stored)
                wrong = not ok
                return ok
            finally:
                if not wrong:
                    self._failures.release(username, client, token)
        finally:
            with self._check_done:
                if ok:  # remembered before the others waiting for this check look
                    self._ok.touch(key, 0)
                    self._ok[key] = time.monotonic() + self.cache_seconds
                self._same.discard(key)
                self._check_done.notify_all()

    # --- the login ------------------------------------------------------------------------------------
    def authenticate(self, username: str | None, password: str | None, client: str = "?") -> Principal:
        if username is None or password is None:
            raise AuthenticationFailed("authentication required", hint="send the tenant's user name and password")
        now = time.monotonic()
        username, password = username[:MAX_USER], password[:MAX_PASSWORD]
        if username == OPERATOR and self.operator_password is not None:
            # the right password gets in even from an address that is locked out: it is a generated secret that
            # no one guesses, and otherwise anyone sharing the address (a proxy, 127.0.0.1) could send five wrong
            # ones a minute and keep the operator (and a Prometheus server) out. Wrong ones are still refused.
            if hmac.compare_digest(password.encode(), self.operator_password.encode()):
                return Principal(OPERATOR, True)
            self._reserve_failure(username, client)  # kept: it is a failure
            raise AuthenticationFailed("wrong user name or password")
        try:
            stored = self.lookup_hash(username)
        except TenantNotFound:
            stored = None
        tag = hmac.new(self._key, password.encode() + b"\0" + (stored or "").encode(), hashlib.sha256).digest()
        if stored:
            with self._lock:
                expiry = self._ok.get((username, tag))
            if expiry and expiry > now:
                return Principal(username)
        if not self._check_once(username, tag, password, stored, client):
            raise AuthenticationFailed("wrong user name or password")
        return Principal(username)


def operator_api_password(home_secrets) -> str:
    """The operator's password for the platform's HTTP APIs, generated on first use (mode 0600)."""
    path = home_secrets / "api-operator.json"
    if path.exists():
        return credentials.read_secret_json(path)["password"]
    password = credentials.generate_password()
    credentials.write_secret(path, {"username": OPERATOR, "password": password})
    return password
