"""Pure logic, no services: the logins of mysimbdp/auth.py."""

from __future__ import annotations

import threading

import pytest

from mysimbdp import auth, credentials
from mysimbdp.errors import AuthenticationFailed, TooManyAttempts

HASH = credentials.hash_password("right-password")


def test_clients_bringing_the_same_password_at_once_cost_one_bcrypt(monkeypatch):
    calls = []
    real = credentials.check_password
    monkeypatch.setattr(credentials, "check_password", lambda p, h: calls.append(1) or real(p, h))
    a = auth.Authenticator(lambda n: HASH if n == "t1" else None)
    got = []
    threads = [
        threading.Thread(target=lambda: got.append(a.authenticate("t1", "right-password", "10.0.0.1")))
        for _ in range(10)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 10 and len(calls) == 1


def test_failures_lock_out_that_client_for_that_user_only():
    stored = {"t1": HASH}
    a = auth.Authenticator(stored.get, max_failures=3, lockout=60)
    for _ in range(3):
        with pytest.raises(AuthenticationFailed):
            a.authenticate("t1", "guess", "10.0.0.66")
    with pytest.raises(TooManyAttempts):
        a.authenticate("t1", "right-password", "10.0.0.66")  # the failing client, even with the right one
    assert a.authenticate("t1", "right-password", "10.0.0.1").name == "t1"  # everyone else gets in
    stored["t1"] = credentials.hash_password("new-password")  # a new password counts at once
    with pytest.raises(AuthenticationFailed):
        a.authenticate("t1", "right-password", "10.0.0.1")
    assert a.authenticate("t1", "new-password", "10.0.0.1").name == "t1"


def test_wrong_operator_passwords_cannot_lock_the_operator_out():
    """The operator's password is a generated secret: five wrong ones from a shared address (a proxy, the
    loopback) are refused and then throttled, but the right one still gets in from there."""
    a = auth.Authenticator(lambda n: None, max_failures=3, lockout=60, operator_password="generated-secret")
    for _ in range(3):
        with pytest.raises(AuthenticationFailed):
            a.authenticate(auth.OPERATOR, "guess", "127.0.0.1")
    with pytest.raises(TooManyAttempts):
        a.authenticate(auth.OPERATOR, "guess", "127.0.0.1")
    assert a.authenticate(auth.OPERATOR, "generated-secret", "127.0.0.1").is_operator
