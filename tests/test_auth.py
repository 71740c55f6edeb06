"""Pure logic, no services: the logins of mysimbdp/auth.py."""

from __future__ import annotations

import os
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


def _guess_at_once(a: auth.Authenticator, n: int, client: str = "10.0.0.7") -> list[str]:
    """``n`` wrong passwords for t1 from one client, all at once: what each was answered."""
    gate, out = threading.Barrier(n), []

    def guess(i):
        gate.wait()
        try:
            a.authenticate("t1", f"guess-{i}", client)
            out.append("in")
        except TooManyAttempts:
            out.append("429")
        except AuthenticationFailed:
            out.append("401")

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_guesses_sent_at_once_get_no_more_tries_than_one_after_another():
    a = auth.Authenticator({"t1": HASH}.get, max_failures=3, lockout=60, wait_for_check=20)
    got = _guess_at_once(a, 12)
    assert got.count("401") == 3 and got.count("429") == 9 and "in" not in got


def test_a_right_password_gives_its_try_back():
    a = auth.Authenticator({"t1": HASH}.get, max_failures=3, lockout=60, cache_seconds=0)
    for _ in range(2):
        with pytest.raises(AuthenticationFailed):
            a.authenticate("t1", "guess", "10.0.0.8")
    assert a.authenticate("t1", "right-password", "10.0.0.8").name == "t1"  # not counted
    with pytest.raises(AuthenticationFailed) as third:
        a.authenticate("t1", "guess", "10.0.0.8")
    assert not isinstance(third.value, TooManyAttempts)
    with pytest.raises(TooManyAttempts):
        a.authenticate("t1", "right-password", "10.0.0.8")


def test_worker_processes_sharing_the_failures_file_share_the_lock_out(tmp_path):
    """Two processes (an API's workers), each with its own Authenticator on one file, guessing at once:
    three tries in all, not three each."""
    import multiprocessing

    path = tmp_path / "failures.sqlite"

    def worker(q):
        a = auth.Authenticator(
            {"t1": HASH}.get, max_failures=3, lockout=60, wait_for_check=20,
            failures=auth.SharedLoginFailures(path, 60),
        )  # fmt: skip
        q.put(_guess_at_once(a, 6))

    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(q,)) for _ in range(2)]
    for p in procs:
        p.start()
    got = q.get(timeout=120) + q.get(timeout=120)
    for p in procs:
        p.join(30)
    assert got.count("401") == 3 and got.count("429") == 9, got
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_a_broken_failures_file_costs_the_sharing_not_the_lock_out(tmp_path):
    path = tmp_path / "failures.sqlite"
    path.write_bytes(os.urandom(4096))  # not a database
    a = auth.Authenticator(
        {"t1": HASH}.get, max_failures=3, lockout=60, failures=auth.SharedLoginFailures(path, 60)
    )
    assert a.authenticate("t1", "right-password", "10.0.0.9").name == "t1"
    for _ in range(3):
        with pytest.raises(AuthenticationFailed):
            a.authenticate("t1", "guess", "10.0.0.10")
    with pytest.raises(TooManyAttempts):
        a.authenticate("t1", "guess", "10.0.0.10")
