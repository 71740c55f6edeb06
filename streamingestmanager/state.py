"""What the stream manager keeps in the platform keyspace: the desired state of each tenant's stream
(written by the API, acted on by the controller), the instances' reports, and the scaling decisions.

The API never starts or stops a container itself: it records what is wanted here and the controller, the
only actor, makes it so. That keeps one writer per container and lets the API run on another host later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from cassandra.cluster import Session
from cassandra.query import SimpleStatement

from mysimbdp import inbox, names
from mysimbdp.config import Config
from mysimbdp.outcome import MAX_REPORT_BYTES, REPORT_FIELDS, parse_report  # noqa: F401 (their home)


@dataclass
class StreamState:
    tenant: str
    running: bool = False
    desired: int = 0
    parked: set[str] = field(default_factory=set)
    stop_requests: set[str] = field(default_factory=set)
    last_change: datetime | None = None


def _day(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%d")


def _now() -> datetime:
    return datetime.now(timezone.utc)


class StreamStore:
    def __init__(self, cfg: Config, session: Session) -> None:
        self.session = session
        ks = cfg.keyspace
        p = session.prepare
        self._get = p(f"SELECT * FROM {ks}.stream_state WHERE tenant = ?")
        self._all = p(f"SELECT * FROM {ks}.stream_state")
        self._create = p(
            f"INSERT INTO {ks}.stream_state (tenant, running, desired, last_change, updated_at)"
            " VALUES (?, ?, ?, ?, ?) IF NOT EXISTS"
        )
        self._change = p(
            f"UPDATE {ks}.stream_state SET running = ?, desired = ?, last_change = ?, updated_at = ?"
            " WHERE tenant = ? IF running = ? AND desired = ?"
        )
        self._park = p(f"UPDATE {ks}.stream_state SET parked = parked + ? WHERE tenant = ?")
        self._unpark = p(f"UPDATE {ks}.stream_state SET parked = parked - ? WHERE tenant = ?")
        self._request_stop = p(f"UPDATE {ks}.stream_state SET stop_requests = stop_requests + ? WHERE tenant = ?")
        self._done_stop = p(f"UPDATE {ks}.stream_state SET stop_requests = stop_requests - ? WHERE tenant = ?")
        self._delete = p(f"DELETE FROM {ks}.stream_state WHERE tenant = ?")
        self._report = p(
            f"INSERT INTO {ks}.stream_reports (tenant, day, received_at, instance, window_start, window_end,"
            " messages, bytes, avg_ms, p95_ms, errors, rejected, pending, instance_started)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        self._reports = p(f"SELECT * FROM {ks}.stream_reports WHERE tenant = ? AND day = ? LIMIT ?")
        self._decision = p(
            f"INSERT INTO {ks}.scaling_decisions (tenant, day, at, action, instances_before,"
            " instances_after, reason) VALUES (?, ?, ?, ?, ?, ?, ?)"
        )
        self._decisions = p(f"SELECT * FROM {ks}.scaling_decisions WHERE tenant = ? AND day = ? LIMIT ?")

    # --- desired state ----------------------------------------------------------------------------------
    def get(self, tenant: str) -> StreamState:
        row = self.session.execute(self._get, (tenant,)).one()
        if row is None:
            return StreamState(tenant)
        return StreamState(
            tenant,
            bool(row.running),
            row.desired or 0,
            set(row.parked or ()),
            set(row.stop_requests or ()),
            row.last_change,
        )

    def all(self) -> list[StreamState]:
        return [
            StreamState(
                r.tenant,
                bool(r.running),
                r.desired or 0,
                set(r.parked or ()),
                set(r.stop_requests or ()),
                r.last_change,
            )
            for r in self.session.execute(self._all)
        ]

    def change(self, st: StreamState, running: bool, desired: int) -> bool:
        """Set running/desired if nobody changed them since ``st`` was read (compare-and-set)."""
        now = _now()
        if st.last_change is None and not st.running and st.desired == 0:
            if self.session.execute(self._create, (st.tenant, running, desired, now, now)).was_applied:
                return True
        return self.session.execute(
            self._change, (running, desired, now, now, st.tenant, st.running, st.desired)
        ).was_applied

    def park(self, tenant: str, slot: str) -> None:
        self.session.execute(self._park, ({slot}, tenant))

    def unpark(self, tenant: str, slot: str) -> None:
        self.session.execute(self._unpark, ({slot}, tenant))

    def request_stop(self, tenant: str, slot: str) -> None:
        self.session.execute(self._request_stop, ({slot}, tenant))

    def stop_done(self, tenant: str, slot: str) -> None:
        self.session.execute(self._done_stop, ({slot}, tenant))

    def forget(self, tenant: str) -> None:
        self.session.execute(self._delete, (tenant,))

    # --- reports ------------------------------------------------------------------------------------------
    def backlog(self, tenant: str) -> dict:
        """The tenant's inbox: records written, turned into rows, and waiting (None when it cannot be read).
        Both tables are in the tenant's keyspace, which its apps may write: only sane numbers count."""
        ks = names.tenant(tenant)
        try:
            heads = self.session.execute(
                SimpleStatement(
                    f"SELECT lane, head_total FROM {ks}.{inbox.LANES_TABLE} WHERE lane IN {inbox.LANES_IN}"
                ),
                timeout=5,
            )
            offsets = self.session.execute(
                SimpleStatement(f"SELECT lane, total FROM {ks}.{inbox.OFFSETS_TABLE} WHERE lane IN {inbox.LANES_IN}"),
                timeout=5,
            )
        except Exception:  # noqa: BLE001 - tables missing (no message yet), Cassandra busy: unknown
            return {"written": None, "done": None, "waiting": None}

        def sane(rows, col) -> dict[int, int]:
            out = {}
            for r in rows:
                v = getattr(r, col)
                if isinstance(r.lane, int) and 0 <= r.lane < inbox.LANES and isinstance(v, int) and 0 <= v < 1 << 62:
                    out[r.lane] = v
            return out

        written, done = sane(heads, "head_total"), sane(offsets, "total")
        return {
            "written": sum(written.values()),
            "done": sum(min(done.get(lane, 0), w) for lane, w in written.items()),
            "waiting": sum(max(0, w - done.get(lane, 0)) for lane, w in written.items()),
        }

    def add_report(self, r: dict) -> None:
        now = _now()
        ts = lambda v: datetime.fromtimestamp(v, timezone.utc)  # noqa: E731
        self.session.execute(
            self._report,
            (
                r["tenant"],
                _day(now),
                now,
                r["instance"],
                ts(r["window_start"]),
                ts(r["window_end"]),
                int(r["messages"]),
                int(r["bytes"]),
                float(r["avg_ms"]),
                float(r["p95_ms"]),
                int(r["errors"]),
                int(r["rejected"]),
                int(r["pending"]),
                ts(r["started_at"]),
            ),
        )

    def reports(self, tenant: str, limit: int = 50, days: int = 2) -> list[dict]:
        out: list[dict] = []
        for d in range(days):
            day = _day(_now() - timedelta(days=d))
            for row in self.session.execute(self._reports, (tenant, day, limit - len(out))):
                out.append(
                    {
                        "tenant": row.tenant,
                        "instance": row.instance,
                        "received_at": row.received_at,
                        "window_start": row.window_start,
                        "window_end": row.window_end,
                        "messages": row.messages,
                        "bytes": row.bytes,
                        "avg_ms": row.avg_ms,
                        "p95_ms": row.p95_ms,
                        "errors": row.errors,
                        "rejected": row.rejected,
                        "pending": row.pending,
                        "instance_started": row.instance_started,
                    }
                )
            if len(out) >= limit:
                break
        return out

    # --- decisions ------------------------------------------------------------------------------------------
    def add_decision(self, tenant: str, action: str, before: int, after: int, reason: str) -> datetime:
        at = _now()
        self.session.execute(self._decision, (tenant, _day(at), at, action, before, after, reason))
        return at

    def decisions(self, tenant: str, limit: int = 20, days: int = 2) -> list[dict]:
        out: list[dict] = []
        for d in range(days):
            day = _day(_now() - timedelta(days=d))
            for row in self.session.execute(self._decisions, (tenant, day, limit - len(out))):
                out.append(
                    {
                        "at": row.at,
                        "action": row.action,
                        "instances_before": row.instances_before,
                        "instances_after": row.instances_after,
                        "reason": row.reason,
                    }
                )
            if len(out) >= limit:
                break
        return out
