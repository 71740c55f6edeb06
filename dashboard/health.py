"""The platform's health as the dashboard shows it: every part as `mysimbdp status` sees it
(mysimbdp/services/platform.py), the Cassandra nodes as the driver sees them, and the disk each keyspace takes.

The operator sees all of it. A tenant sees whether each part is up, and its own keyspace's size: nothing of
the machine (no pids, logs, deaths) and nothing of other tenants.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from cassandra.cluster import Session
from cassandra.query import SimpleStatement

from mysimbdp import bounded, db
from mysimbdp.config import Config
from mysimbdp.services import platform

log = logging.getLogger(__name__)
CACHE_SECONDS = 3.0  # every open page polls: one look at the platform serves them all for this long
MAX_ENTRIES = 100_000  # files and folders counted per keyspace (a keyspace's folder holds its sstables)


class Cached:
    """The value of ``make()``, made again at most every ``seconds`` (one caller makes it, the others wait)."""

    def __init__(self, make: Callable[[], object], seconds: float = CACHE_SECONDS) -> None:
        self.make = make
        self.seconds = seconds
        self._lock = threading.Lock()
        self._value: object = None
        self._at = 0.0

    def get(self) -> object:
        with self._lock:
            if self._value is None or time.monotonic() - self._at > self.seconds:
                self._value = self.make()
                self._at = time.monotonic()
            return self._value


def nodes(session: Session) -> list[dict]:
    """Every Cassandra node the driver knows of, and whether it is up."""
    out = []
    for h in session.cluster.metadata.all_hosts():
        out.append(
            {
                "address": str(h.endpoint.address if h.endpoint is not None else h.address),
                "datacenter": h.datacenter,
                "rack": h.rack,
                "up": bool(h.is_up),
                "version": str(h.release_version) if h.release_version else None,
            }
        )
    return sorted(out, key=lambda n: n["address"])


def keyspace_sizes(cfg: Config, session: Session, keyspaces: list[str]) -> dict[str, dict]:
    """Bytes on disk of each keyspace (named by validated names only). The node the platform runs: the size of
    the keyspace's folder in its data directory, snapshots included (they take disk too). An existing cluster:
    the sum over its nodes of ``system_views.disk_usage``, which counts in whole MiB."""
    if cfg.cassandra.managed:
        data = cfg.paths.cassandra / "data"
        out = {}
        for ks in keyspaces:
            size = bounded.tree_size(data / ks, max_entries=MAX_ENTRIES)
            out[ks] = {"bytes": size.bytes, "exact": not size.too_many}
        return out
    wanted = set(keyspaces)
    totals = {ks: 0 for ks in keyspaces}
    stmt = SimpleStatement("SELECT keyspace_name, mebibytes FROM system_views.disk_usage")
    for h in session.cluster.metadata.all_hosts():
        try:
            for row in session.execute(stmt, host=h, timeout=5):
                if row.keyspace_name in wanted and isinstance(row.mebibytes, int):
                    totals[row.keyspace_name] += row.mebibytes << 20
        except Exception as exc:  # noqa: BLE001 - a node down or an older Cassandra: its share is unknown
            log.info("disk usage of node %s unknown: %s", h, exc)
    return {ks: {"bytes": b, "exact": False} for ks, b in totals.items()}


def operator_view(cfg: Config, session: Callable[[], Session], keyspaces: Callable[[Session], list[str]]) -> dict:
    """Everything; when Cassandra cannot be reached (when health matters most) the parts still come, with the
    nodes and keyspaces left empty and the reason said."""
    st = platform.status(cfg)
    out = {"ready": st["ready"], "parts": st["parts"], "nodes": [], "keyspaces": {}, "problem": None}
    try:
        s = session()
        out["nodes"] = nodes(s)
        out["keyspaces"] = keyspace_sizes(cfg, s, keyspaces(s))
    except db.UNAVAILABLE as exc:
        out["problem"] = f"Cassandra cannot be reached: {exc}"[:300]
    return out


def tenant_view(full: dict, tenant: str) -> dict:
    """What a tenant may see of ``full`` (the operator's view): up or down for each part, its own keyspace."""
    own = full["keyspaces"].get(tenant)
    return {
        "ready": full["ready"],
        "parts": {name: {"ready": bool(p.get("ready"))} for name, p in full["parts"].items()},
        "nodes": [{"up": n["up"]} for n in full["nodes"]],
        "keyspaces": {tenant: own} if own is not None else {},
    }
