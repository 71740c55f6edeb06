"""The heartbeat of the Cassandra nodes: who went down, when, and when it came back.

The stream controller (the platform's one always-running loop) runs :class:`NodeWatch` in a thread: every
``cassandra.watch_interval`` seconds it reads each node's state through its long-lived session (the
driver's up/down view, which follows Cassandra's own events, and the gossip state: see
``cassandra_node.cluster_nodes``), and records each change as a row of the platform keyspace's
``node_events``. A node it cannot read at all (every node down, for one) is recorded down with the reason.
An event that cannot be written yet (two of three nodes down refuse a quorum write) waits in memory, in
order, up to a bound, and is written when the cluster takes writes again, with the time it was seen.

``mysimbdp status`` and ``mysimbdp node status`` show the latest events (:func:`recent`).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from cassandra.cluster import Session

from .config import Config

log = logging.getLogger(__name__)

#: events waiting for a cluster that takes writes (older ones go first: the count of dropped ones is logged)
PENDING_LIMIT = 1000


@dataclass(frozen=True)
class Event:
    at: datetime
    address: str
    state: str  # "up" | "down"
    detail: str


def changes(last: dict[str, str], seen: dict, at: datetime) -> list[Event]:
    """The events between what was known (``last``: address -> "up"/"down") and what ``cluster_nodes``
    returned (``seen``); updates ``last``. An unreadable cluster makes every node known up go down."""
    events = []
    nodes = seen.get("nodes")
    if not nodes:
        why = seen.get("nodes_error") or "no node answers"
        for address, state in sorted(last.items()):
            if state == "up":
                events.append(Event(at, address, "down", f"unreachable: {why}"[:200]))
                last[address] = "down"
        return events
    for n in nodes:
        state = "up" if n["state"].startswith("U") else "down"
        if last.get(n["address"]) != state:
            events.append(Event(at, n["address"], state, f"{n['state']} ({n['gossip']})"))
            last[n["address"]] = state
    return events


class NodeWatch:
    def __init__(self, cfg: Config, session_fn) -> None:
        self.cfg = cfg
        self.session_fn = session_fn  # a SessionHolder's get: reconnects after a full outage
        self.last: dict[str, str] = {}
        self.pending: deque[Event] = deque()
        self.dropped = 0
        self.seeded = False

    def _seed(self, session: Session) -> None:
        """What was recorded last for each node (today's and yesterday's events), so a restarted controller
        does not record again what did not change."""
        for row in recent(self.cfg, session, limit=200)[::-1]:
            self.last[row["address"]] = row["state"]
        self.seeded = True

    def tick(self, now: datetime | None = None) -> list[Event]:
        """One look; the events it found (written, or waiting to be)."""
        from .services import cassandra_node

        now = now or datetime.now(timezone.utc)
        try:
            session = self.session_fn()
            if not self.seeded:
                self._seed(session)
            seen = cassandra_node.cluster_nodes(self.cfg, session)
        except Exception as exc:  # noqa: BLE001 - no session at all: every node is out of reach
            seen = {"nodes_error": f"{type(exc).__name__}: {exc}"}
        events = changes(self.last, seen, now) if self.seeded or seen.get("nodes") else []
        for e in events:
            log.warning("Cassandra node %s is %s (%s)", e.address, e.state, e.detail)
            if len(self.pending) >= PENDING_LIMIT:
                self.pending.popleft()
                self.dropped += 1
            self.pending.append(e)
        self._flush()
        return events

    def _flush(self) -> None:
        if not self.pending:
            return
        try:
            session = self.session_fn()
            insert = session.prepare(
                f"INSERT INTO {self.cfg.keyspace}.node_events (day, at, address, state, detail) VALUES (?, ?, ?, ?, ?)"
            )
            while self.pending:
                e = self.pending[0]
                session.execute(insert, (e.at.strftime("%Y-%m-%d"), e.at, e.address, e.state, e.detail), timeout=10)
                self.pending.popleft()
        except Exception as exc:  # noqa: BLE001 - not writable yet (a quorum is down): next time
            log.info("%d node event(s) wait to be recorded: %s", len(self.pending), str(exc)[:200])
        if self.dropped:
            log.warning("%d node event(s) were dropped while the cluster took no writes", self.dropped)
            self.dropped = 0

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the watch must outlive anything one look meets
                log.warning("node watch error", exc_info=True)
            stop.wait(self.cfg.cassandra.watch_interval)


def recent(cfg: Config, session: Session, limit: int = 10) -> list[dict]:
    """The latest node events, newest first (today's and yesterday's), as JSON-ready dicts."""
    today = datetime.now(timezone.utc)
    out: list[dict] = []
    query = session.prepare(f"SELECT at, address, state, detail FROM {cfg.keyspace}.node_events WHERE day = ? LIMIT ?")
    for day in (today, today - timedelta(days=1)):
        for row in session.execute(query, (day.strftime("%Y-%m-%d"), limit - len(out)), timeout=10):
            at = f"{row.at:%Y-%m-%dT%H:%M:%S}Z"  # the driver gives UTC without a zone
            out.append({"at": at, "address": row.address, "state": row.state, "detail": row.detail or ""})
        if len(out) >= limit:
            break
    return out
