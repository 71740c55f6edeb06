"""The autoscaler's policy, as a pure function of the latest reports (so that it can be tested alone).

It adds an instance when the tenant falls behind (the reported average ingestion time passes
``scale_up_avg_ms``, or the messages held unwritten per instance pass ``scale_up_backlog``) and removes
one when the tenant's whole rate would fit in one instance fewer at under ``scale_down_rate`` messages a
second each, with nothing held. Never below ``min_instances`` or above ``max_instances``; at most one
change per ``cooldown_seconds``; only once every desired instance runs and has reported.
"""

from __future__ import annotations

from dataclasses import dataclass

from mysimbdp.constraints import Autoscale


@dataclass(frozen=True)
class Decision:
    action: str  # scale_up | scale_down
    target: int
    reason: str


def summarize(reports: list[dict]) -> dict:
    """Totals over the latest report of each instance."""
    messages = sum(r["messages"] for r in reports)
    rate = sum(r["messages"] / max(r["window_end"] - r["window_start"], 1e-3) for r in reports)
    avg_ms = (sum(r["avg_ms"] * r["messages"] for r in reports) / messages) if messages else 0.0
    pending = sum(r["pending"] for r in reports)
    p95 = max((r["p95_ms"] for r in reports), default=0.0)
    return {"messages": messages, "rate": rate, "avg_ms": avg_ms, "p95_ms": p95, "pending": pending}


def decide(policy: Autoscale, desired: int, running: int, reports: list[dict], since_change: float) -> Decision | None:
    """The change to make now, or None. ``reports`` holds the latest fresh report of each running instance."""
    if not policy.enabled:
        return None
    if desired < policy.min_instances:
        return Decision("scale_up", policy.min_instances, f"below the minimum of {policy.min_instances}")
    if desired > policy.max_instances:
        return Decision("scale_down", policy.max_instances, f"above the maximum of {policy.max_instances}")
    if since_change < policy.cooldown_seconds:
        return None
    if running < desired or len(reports) < desired:
        return None  # wait until every desired instance runs and has reported
    s = summarize(reports)
    per_instance_backlog = s["pending"] / max(desired, 1)
    if desired < policy.max_instances:
        if s["messages"] and s["avg_ms"] > policy.scale_up_avg_ms:
            return Decision(
                "scale_up",
                desired + 1,
                f"average ingestion time {s['avg_ms']:.1f} ms > {policy.scale_up_avg_ms:g} ms "
                f"at {s['rate']:.0f} msg/s over {desired} instance(s)",
            )
        if per_instance_backlog > policy.scale_up_backlog:
            return Decision(
                "scale_up",
                desired + 1,
                f"{s['pending']} messages held unwritten ({per_instance_backlog:.0f} per instance "
                f"> {policy.scale_up_backlog})",
            )
    if desired > max(policy.min_instances, 1) and s["pending"] == 0:
        if s["rate"] < policy.scale_down_rate * (desired - 1) and s["avg_ms"] <= policy.scale_up_avg_ms / 2:
            return Decision(
                "scale_down",
                desired - 1,
                f"idle: {s['rate']:.1f} msg/s in all fits {desired - 1} instance(s) "
                f"at under {policy.scale_down_rate:g} msg/s each",
            )
    return None
