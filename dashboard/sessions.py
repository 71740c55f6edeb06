"""Dashboard logins: a signed session cookie, checked on every request.

The login form's user name and password are checked exactly as the APIs check HTTP Basic logins
(:class:`mysimbdp.auth.Authenticator`: bcrypt, the cache, the per-client lock-out; the operator's password is
the APIs' one). A good login gets a cookie ``mysimbdp_session`` holding who logged in, when the session ends,
a random CSRF token, and a fingerprint of the password hash it was opened with, all sealed with an HMAC-SHA256
under a key generated once into ``secrets/dashboard-session.json`` (0600). The cookie is HttpOnly,
SameSite=Strict, and Secure when ``dashboard.cookie_secure``.

On every request the cookie is opened again: a forged or cut one, one past its end, one logged out (its
CSRF token is kept in ``secrets/dashboard-logouts.json`` until the session's own end, so a copy of the cookie
is no good either, also after a restart), one of a tenant that no longer exists (or is no longer ready), or
one opened before the password changed ends the session
(:class:`mysimbdp.errors.SessionExpired`: pages go back to the login, JSON calls get 401). A POST must carry
the session's CSRF token (header ``X-CSRF-Token`` or form field ``csrf``) and, when the browser says where it
comes from (``Origin``), come from the dashboard itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from flask import g, request

from mysimbdp import auth, bounded, credentials, names, web
from mysimbdp.config import Config
from mysimbdp.errors import CsrfRefused, SessionExpired

COOKIE = "mysimbdp_session"
MAX_COOKIE = 1024  # a cookie longer than this was not made here
#: why a session ended, as the login page says it (the page gets the key, never text from the request)
ENDED = {
    "expired": "Your session has expired: log in again.",
    "invalid": "Your session is not valid (any more): log in again.",
    "gone": "This tenant no longer exists.",
    "password": "The password changed since this login: log in again.",
    "bye": "You are logged out.",
}
#: endpoints served without a session (the login itself, static files)
PUBLIC = {"dashboard.login_page", "dashboard.login", "dashboard.static"}


@dataclass(frozen=True)
class Session:
    user: str  # a tenant's name, or "operator"
    operator: bool
    expires: int  # seconds since the epoch
    csrf: str
    stamp: str  # fingerprint of the password hash the session was opened with


def session_key(cfg: Config) -> bytes:
    """The key sessions are sealed with, generated on first use (mode 0600)."""
    path = cfg.paths.secrets / "dashboard-session.json"
    if not path.exists():
        credentials.write_secret(path, {"key": secrets.token_hex(32)})
    return bytes.fromhex(credentials.read_secret_json(path)["key"])


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def seal(key: bytes, s: Session) -> str:
    payload = _b64(json.dumps(asdict(s), separators=(",", ":")).encode())
    return payload + "." + _b64(hmac.new(key, payload.encode("ascii"), hashlib.sha256).digest())


def unseal(key: bytes, value: str | None, now: float | None = None) -> Session:
    """The session a cookie holds; SessionExpired (with ``reason``) when it is missing, forged or past its end."""
    if not value:
        raise ended("none")
    try:
        if len(value) > MAX_COOKIE:
            raise ValueError("too long")
        payload, _, sig = value.partition(".")
        good = hmac.new(key, payload.encode("ascii"), hashlib.sha256).digest()
        if not hmac.compare_digest(good, _unb64(sig)):
            raise ValueError("bad signature")
        data = bounded.loads_json(_unb64(payload), max_bytes=MAX_COOKIE, max_depth=2)
        s = Session(**data)
        if not (
            isinstance(s.user, str)
            and isinstance(s.operator, bool)
            and isinstance(s.expires, int)
            and isinstance(s.csrf, str)
            and isinstance(s.stamp, str)
        ):
            raise ValueError("bad fields")
    except (ValueError, TypeError, UnicodeError):  # binascii.Error is a ValueError
        raise ended("invalid") from None
    if s.expires <= (time.time() if now is None else now):
        raise ended("expired")
    return s


def ended(reason: str) -> SessionExpired:
    exc = SessionExpired(ENDED.get(reason, "log in first"), hint="log in again")
    exc.reason = reason  # type: ignore[attr-defined] - the login page's message key
    return exc


def stamp(key: bytes, secret: str) -> str:
    """A fingerprint of a password hash (or of the operator's password): a change of it ends the sessions."""
    return _b64(hmac.new(key, b"stamp\0" + secret.encode(), hashlib.sha256).digest()[:16])


class LoggedOut:
    """Sessions ended by a logout before their own end, by CSRF token (random per session), each kept until the
    session would have ended; in a file of the secrets folder, so that a restart does not bring them back."""

    MAX = 10_000  # past this, the ones that end first are forgotten first
    MAX_BYTES = 2 << 20

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._until: dict[str, int] = {}
        try:
            data = bounded.loads_json(bounded.read_regular(path, self.MAX_BYTES), max_bytes=self.MAX_BYTES, max_depth=2)
            if isinstance(data, dict):
                self._until = {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, int)}
        except (OSError, ValueError):
            pass  # none yet (or unreadable: sessions then end only by their time, as before this file existed)

    def add(self, s: Session) -> None:
        with self._lock:
            now = time.time()
            self._until = {k: v for k, v in self._until.items() if v > now}
            self._until[s.csrf] = s.expires
            while len(self._until) > self.MAX:
                del self._until[min(self._until, key=self._until.__getitem__)]
            credentials.write_secret(self.path, dict(self._until))

    def __contains__(self, token: str) -> bool:
        with self._lock:
            return token in self._until


class Gate(web.Directory):
    """The dashboard's side of :class:`mysimbdp.web.Directory`: the same tenants, Authenticator (the operator
    included) and per-tenant request limit, with the login read from the session cookie. ``web.create_api``
    calls :meth:`login` before every view but ``/healthz`` and ``/metrics``."""

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg, operator=True, threads=cfg.dashboard.threads)
        self.key = session_key(cfg)
        self.operator_stamp = stamp(self.key, self.auth.operator_password or "")
        self.logged_out = LoggedOut(cfg.paths.secrets / "dashboard-logouts.json")

    # --- opening a session (the login form) ------------------------------------------------------------
    def open_session(self, user: str, password: str) -> Session:
        """Check a login as the APIs do; the new session (AuthenticationFailed / TooManyAttempts otherwise)."""
        principal = self.auth.authenticate(user, password, request.remote_addr or "?")
        if principal.is_operator:
            mark = self.operator_stamp
        else:
            fresh = self.registry.password_hash(principal.name)  # not the cached tenant: it may predate a change
            if fresh is None:
                raise ended("gone")
            mark = stamp(self.key, fresh)
        expires = int(time.time()) + self.cfg.dashboard.session_minutes * 60
        return Session(principal.name, principal.is_operator, expires, secrets.token_hex(16), mark)

    # --- every request --------------------------------------------------------------------------------
    def login(self) -> auth.Principal | None:  # type: ignore[override]
        if request.endpoint in PUBLIC:
            return None
        s = unseal(self.key, request.cookies.get(COOKIE))
        if s.csrf in self.logged_out:
            raise ended("bye")
        if s.operator:
            if s.user != auth.OPERATOR or not hmac.compare_digest(s.stamp, self.operator_stamp):
                raise ended("password")
            g.tenant = None
        else:
            try:
                names.tenant(s.user)
            except Exception:  # noqa: BLE001 - a sealed name is one of ours; anything else is not a session
                raise ended("invalid") from None
            t = self.tenant(s.user)  # looked up again at most every few seconds: a deleted tenant's session ends
            if t is None:
                raise ended("gone")
            if not hmac.compare_digest(s.stamp, stamp(self.key, t.password_hash)):
                # the cached tenant may be older than the session (a login just after a password change)
                fresh = self.registry.password_hash(s.user)
                if fresh is None or not hmac.compare_digest(s.stamp, stamp(self.key, fresh)):
                    raise ended("password")
            g.tenant = t
        g.session = s
        g.principal = auth.Principal(s.user, s.operator)
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            check_csrf(s)
        if not s.operator:
            self.count_request(s.user)
        return g.principal


def same_origin() -> bool:
    """Whether a state-changing request comes from the dashboard's own pages (browsers send ``Origin`` with
    every POST; a client that sends none, curl say, is not a browser another site can drive)."""
    origin = request.headers.get("Origin")
    return origin is None or origin == request.host_url.rstrip("/")


def check_csrf(s: Session) -> None:
    if not same_origin():
        raise CsrfRefused("this request comes from another site's page")
    token = request.headers.get("X-CSRF-Token") or request.form.get("csrf") or ""
    if not hmac.compare_digest(token.encode()[:64], s.csrf.encode()):
        raise CsrfRefused("this request does not carry the session's token", hint="reload the page")
