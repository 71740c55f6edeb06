"""The autoscaler's policy alone (pure logic): thresholds, bounds, cooldown, waiting for reports."""

from __future__ import annotations

import pytest

from mysimbdp.constraints import Autoscale
from streamingestmanager.autoscaler import decide, summarize

POLICY = Autoscale(
    enabled=True,
    min_instances=1,
    max_instances=3,
    scale_up_avg_ms=40,
    scale_up_backlog=500,
    scale_down_rate=30,
    cooldown_seconds=10,
)


def report(messages=100, seconds=2.0, avg_ms=5.0, p95_ms=10.0, pending=0):
    return {
        "messages": messages,
        "window_start": 0.0,
        "window_end": seconds,
        "avg_ms": avg_ms,
        "p95_ms": p95_ms,
        "pending": pending,
    }


def test_scales_up_when_ingestion_is_slow():
    d = decide(POLICY, 1, 1, [report(avg_ms=80)], since_change=60)
    assert d.action == "scale_up" and d.target == 2 and "80.0 ms > 40 ms" in d.reason


def test_scales_up_on_backlog():
    d = decide(POLICY, 2, 2, [report(pending=900), report(pending=400)], since_change=60)
    assert d.action == "scale_up" and d.target == 3 and "held unwritten" in d.reason


def test_never_above_the_maximum():
    assert decide(POLICY, 3, 3, [report(avg_ms=500, pending=5000)] * 3, since_change=60) is None
    d = decide(POLICY, 5, 5, [report()] * 5, since_change=0)
    assert d.action == "scale_down" and d.target == 3  # brought back within bounds, cooldown or not


def test_scales_down_when_idle_but_never_below_the_minimum():
    d = decide(POLICY, 3, 3, [report(messages=10)] * 3, since_change=60)  # 15 msg/s in all
    assert d.action == "scale_down" and d.target == 2 and "idle" in d.reason
    assert decide(POLICY, 1, 1, [report(messages=0)], since_change=600) is None
    up = decide(POLICY, 0, 0, [], since_change=0)
    assert up.action == "scale_up" and up.target == 1 and "minimum" in up.reason


def test_busy_instances_are_not_removed():
    # 200 msg/s in all: more than 30 msg/s for one instance fewer
    assert decide(POLICY, 2, 2, [report(messages=200), report(messages=200)], since_change=60) is None
    # nothing held is a condition too
    assert decide(POLICY, 2, 2, [report(messages=1, pending=3), report(messages=1)], since_change=60) is None


def test_cooldown_and_waiting_for_every_instance_to_report():
    assert decide(POLICY, 1, 1, [report(avg_ms=80)], since_change=5) is None  # cooling down
    assert decide(POLICY, 2, 1, [report(avg_ms=80)], since_change=60) is None  # one still starting
    assert decide(POLICY, 2, 2, [report(avg_ms=80)], since_change=60) is None  # one has not reported


def test_disabled():
    off = Autoscale(**{**POLICY.__dict__, "enabled": False})
    assert decide(off, 1, 1, [report(avg_ms=1000)], since_change=600) is None


def test_summary_weights_the_average_by_messages():
    s = summarize([report(messages=100, avg_ms=10), report(messages=300, avg_ms=30)])
    assert s["avg_ms"] == 25 and s["messages"] == 400 and s["rate"] == 200


@pytest.mark.parametrize(
    "field, value",
    [
        ("messages", 10**30),
        ("messages", 10**400),  # too large for a float: math.isfinite raised OverflowError
        ("avg_ms", 1e308),
        ("pending", 2**64),
        ("started_at", 1e15),
        ("bytes", -1),
        ("p95_ms", float("nan")),
        ("errors", True),
        ("window_end", "soon"),
    ],
)
def test_reports_with_numbers_no_sane_instance_sends_are_refused(field, value):
    """Reports come from tenant code: the autoscaler and the keyspace must never see such values."""
    import json
    import time

    from mysimbdp.errors import TenantError
    from streamingestmanager.state import parse_report

    now = time.time()
    report = {
        "tenant": "acme",
        "instance": "s0",
        "window_start": now - 2,
        "window_end": now,
        "messages": 10,
        "bytes": 500,
        "avg_ms": 3.5,
        "p95_ms": 9.0,
        "errors": 0,
        "rejected": 0,
        "pending": 0,
        "started_at": now - 60,
        "first_message_at": None,
    }
    assert parse_report("acme", "s0", json.dumps(report).encode())["messages"] == 10
    with pytest.raises(TenantError, match=field):
        parse_report("acme", "s0", json.dumps({**report, field: value}).encode())
