"""A stream's plots: the instances' timing reports (streamingestmanager/state.py) turned into time series.

Each report covers one instance's window (``window_start`` .. ``window_end``) with the records it turned into
rows, their average and 95th percentile time from publish to row, and the records waiting in its lanes. The
plot's time is cut into equal steps; in each step:

* messages/s: for each instance, the mean rate of its reports ending in the step, summed over instances;
* average ms: the mean of the reports' averages weighted by their records (none when no record);
* p95 ms: the largest p95 of the reports with records (the p95 of all the step's records is at most this);
* backlog: for each instance, its last report's waiting records, summed;
* instances: how many reported.

A step no report ends in is a gap (None), not a zero. Decisions in the window come along with their time
(seconds since the epoch), action, instance counts and reason, to be marked on the plot.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone

MAX_POINTS = 240  # steps in a plot, whatever the window
MAX_REPORTS = 5000  # reports read for one plot (the newest; the plot starts later when there are more)


def _epoch(v) -> float | None:
    if isinstance(v, datetime):
        return (v if v.tzinfo else v.replace(tzinfo=timezone.utc)).timestamp()
    return None


def step_for(minutes: int, report_interval: float) -> float:
    """Seconds per point: twice the report interval at least (reports come with some jitter: with one interval
    per step, some steps would get two reports of an instance and the next none), and no more than MAX_POINTS
    points in the window."""
    return float(max(2 * report_interval, math.ceil(minutes * 60 / MAX_POINTS)))


def build(reports: list[dict], decisions: list[dict], *, end: float, minutes: int, step: float) -> dict:
    start = end - minutes * 60
    n = max(1, math.ceil((end - start) / step))
    start = end - n * step
    rates: list[dict[str, list[float]]] = [{} for _ in range(n)]
    weighted = [0.0] * n
    counted = [0] * n
    p95: list[float | None] = [None] * n
    last: list[dict[str, tuple[float, int]]] = [{} for _ in range(n)]
    for r in reports:
        t = _epoch(r.get("window_end")) or _epoch(r.get("received_at"))
        if t is None or not start <= t < end:
            continue
        i = min(n - 1, int((t - start) // step))
        inst = str(r.get("instance"))
        begun = _epoch(r.get("window_start"))
        length = t - begun if begun is not None and t > begun else None
        messages = int(r.get("messages") or 0)
        if length:
            rates[i].setdefault(inst, []).append(messages / length)
        if messages > 0:
            weighted[i] += float(r.get("avg_ms") or 0.0) * messages
            counted[i] += messages
            p95[i] = max(p95[i] or 0.0, float(r.get("p95_ms") or 0.0))
        seen = last[i].get(inst)
        if seen is None or seen[0] <= t:
            last[i][inst] = (t, int(r.get("pending") or 0))
    reported = [bool(last[i]) for i in range(n)]
    out = {
        "start": start,
        "end": end,
        "step": step,
        "time": [round(start + (i + 1) * step, 3) for i in range(n)],
        "messages_per_s": [
            round(sum(sum(v) / len(v) for v in rates[i].values()), 3) if reported[i] else None for i in range(n)
        ],
        "avg_ms": [round(weighted[i] / counted[i], 3) if counted[i] else None for i in range(n)],
        "p95_ms": [round(p95[i], 3) if p95[i] is not None else None for i in range(n)],
        "backlog": [sum(p for _, p in last[i].values()) if reported[i] else None for i in range(n)],
        "instances": [len(last[i]) if reported[i] else None for i in range(n)],
        "decisions": [],
    }
    for d in decisions:
        at = _epoch(d.get("at"))
        if at is not None and start <= at <= end:
            out["decisions"].append(
                {
                    "at": at,
                    "action": d.get("action"),
                    "instances_before": d.get("instances_before"),
                    "instances_after": d.get("instances_after"),
                    "reason": d.get("reason"),
                }
            )
    out["decisions"].sort(key=lambda d: d["at"])
    return out
