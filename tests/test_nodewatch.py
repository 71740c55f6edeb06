"""The node watch (mysimbdp/nodewatch.py): which changes of the nodes' states become up/down events (pure
logic), and on the running platform, the stream controller records each node up and status shows it."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest

from conftest import run_cli

AT = datetime(2026, 12, 3, 10, 0, tzinfo=timezone.utc)


def node(address: str, state: str = "UN", gossip: str = "NORMAL") -> dict:
    return {"address": address, "state": state, "gossip": gossip}


def test_a_node_first_seen_is_up_and_nothing_is_said_again_until_it_changes():
    from mysimbdp.nodewatch import changes

    last: dict[str, str] = {}
    first = changes(last, {"nodes": [node("10.0.0.1"), node("10.0.0.2")]}, AT)
    assert [(e.address, e.state) for e in first] == [("10.0.0.1", "up"), ("10.0.0.2", "up")]
    assert changes(last, {"nodes": [node("10.0.0.1"), node("10.0.0.2")]}, AT) == []
    down = changes(last, {"nodes": [node("10.0.0.1"), node("10.0.0.2", "DN")]}, AT)
    assert [(e.address, e.state, e.detail) for e in down] == [("10.0.0.2", "down", "DN (NORMAL)")]
    assert changes(last, {"nodes": [node("10.0.0.1"), node("10.0.0.2", "DN")]}, AT) == []
    back = changes(last, {"nodes": [node("10.0.0.1"), node("10.0.0.2", "UJ", "BOOT")]}, AT)
    assert [(e.address, e.state) for e in back] == [("10.0.0.2", "up")]


def test_an_unreadable_cluster_takes_every_node_known_up_down_once():
    from mysimbdp.nodewatch import changes

    last = {"10.0.0.1": "up", "10.0.0.2": "down"}
    gone = changes(last, {"nodes_error": "NoHostAvailable: all refused"}, AT)
    assert [(e.address, e.state) for e in gone] == [("10.0.0.1", "down")]
    assert "NoHostAvailable" in gone[0].detail
    assert changes(last, {}, AT) == []  # still unreadable: nothing new
    assert [e.state for e in changes(last, {"nodes": [node("10.0.0.1")]}, AT)] == ["up"]


def test_events_wait_in_order_while_nothing_can_be_written_and_the_oldest_go_past_the_bound():
    from mysimbdp import config, nodewatch

    cfg = config.load(env={"MYSIMBDP_HOME": "/nonexistent-home"})

    def refuse():
        raise RuntimeError("no quorum")

    w = nodewatch.NodeWatch(cfg, refuse)
    w.seeded = True
    w.last = {f"10.0.{i // 250}.{i % 250}": "up" for i in range(nodewatch.PENDING_LIMIT + 5)}
    w.tick(AT)  # no session: every node is recorded down, and nothing can be written
    assert len(w.pending) == nodewatch.PENDING_LIMIT and w.dropped == 0  # the log said how many went
    assert all(e.state == "down" for e in w.pending)


@pytest.mark.services
def test_the_stream_controller_records_each_node_up_and_status_shows_it(platform, cfg):
    deadline = time.monotonic() + 60
    while True:
        shown = run_cli("status")
        if all(f"{a:<15} up" in shown.stdout for a in cfg.node_addresses):
            break
        assert time.monotonic() < deadline, shown.stdout
        time.sleep(2)
    node = run_cli("node", "status")
    assert node.returncode == 0 and "latest node events:" in node.stdout, node.stdout
