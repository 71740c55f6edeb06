"""Logging tenants (and the operator) in to the platform's HTTP APIs.

* bcrypt check of the tenant's password against the hash in the platform keyspace;
* a short-lived cache of successful checks (keyed by a keyed hash of the password, never the password),
  so that a client uploading many files does not pay bcrypt on every request;
* failures are counted per user name and per client address; past ``max_failures`` for one user (or four
  times as many from one address, which many users may share) within ``lockout`` seconds, further
  attempts are refused with 429 and Retry-After, even with the right password; a request without any
  credentials is not a failure (it is how HTTP asks for them);
* an unknown user costs the same bcrypt time as a known one.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Callable

from . import credentials
from .errors import AuthenticationFailed, TenantNotFound, TooManyAttempts

_DUMMY_HASH = credentials.hash_password("not-a-real-password")
OPERATOR = "operator"


@dataclass(frozen=True)
class Principal:
    name: str  # the tenant's name, or "operator"
    is_operator: bool = False


class Authenticator:
    def __init__(
        self,
        lookup_hash: Callable[[str], str | None],
        *,
        max_failures: int = 5,
        lockout: float = 60,
        operator_password: str | None = None,
        cache_seconds: float = 300,
    ) -> None:
        """``lookup_hash(name)`` returns the tenant's bcrypt hash, or None for no such (ready) tenant."""
        self.lookup_hash = lookup_hash
        self.max_failures = max_failures
        self.lockout = lockout
        self.operator_password = operator_password
        self.cache_seconds = cache_seconds
        self._key = os.urandom(32)
        self._ok: dict[tuple[str, bytes], float] = {}
        self._fails: dict[tuple[str, str], deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        q = self._fails[key]
        while q and q[0] < now - self.lockout:
            q.popleft()
        return q

    def _check_lockout(self, username: str, client: str, now: float) -> None:
        with self._lock:
            for key, limit in ((("addr", client), 4 * self.max_failures), (("user", username), self.max_failures)):
                q = self._recent(key, now)
                if len(q) >= limit:
                    retry = int(q[0] + self.lockout - now) + 1
                    raise TooManyAttempts(
                        f"too many failed logins {'from this client' if key[0] == 'addr' else 'for this user'}",
                        retry_after=retry,
                        hint=f"try again in {retry}s",
                    )

    def _failed(self, username: str, client: str, now: float) -> None:
        with self._lock:
            self._fails[("addr", client)].append(now)
            self._fails[("user", username)].append(now)

    def authenticate(self, username: str | None, password: str | None, client: str = "?") -> Principal:
        now = time.monotonic()
        if username is None or password is None:
            raise AuthenticationFailed("authentication required", hint="send the tenant's user name and password")
        username = username[:64]
        self._check_lockout(username, client, now)
        if username == OPERATOR and self.operator_password is not None:
            if hmac.compare_digest(password.encode(), self.operator_password.encode()):
                return Principal(OPERATOR, True)
            self._failed(username, client, now)
            raise AuthenticationFailed("wrong user name or password")
        try:
            stored = self.lookup_hash(username)
        except TenantNotFound:
            stored = None
        tag = hmac.new(self._key, password.encode() + b"\0" + (stored or "").encode(), hashlib.sha256).digest()
        with self._lock:
            expiry = self._ok.get((username, tag))
        if stored and expiry and expiry > now:
            return Principal(username)
        ok = credentials.check_password(password, stored or _DUMMY_HASH) and bool(stored)
        if not ok:
            self._failed(username, client, now)
            raise AuthenticationFailed("wrong user name or password")
        with self._lock:
            if len(self._ok) > 10000:
                self._ok.clear()
            self._ok[(username, tag)] = now + self.cache_seconds
        return Principal(username)


def operator_api_password(home_secrets) -> str:
    """The operator's password for the platform's HTTP APIs, generated on first use (mode 0600)."""
    path = home_secrets / "api-operator.json"
    if path.exists():
        return credentials.read_secret_json(path)["password"]
    password = credentials.generate_password()
    credentials.write_secret(path, {"username": OPERATOR, "password": password})
    return password
