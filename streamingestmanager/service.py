"""Starting, stopping and looking at a tenant's stream, as the API and the CLI offer it.

These only record what is wanted (see :mod:`.state`); the controller makes it so within a second, and
:func:`wait_converged` lets a caller wait for that.

How manual start/stop and the autoscaler work together:

* ``start(n)`` starts the stream if it was stopped (with ``n`` instances, at least the policy's minimum),
  or adds ``n`` instances to a running one; never more than the policy's maximum;
* ``stop(instance)`` removes one instance; the autoscaler may add one back later if the load calls for it
  (and does so at once if that went below the minimum);
* ``stop()`` stops the whole stream: the autoscaler leaves a stopped stream alone until the next start;
  records published meanwhile wait in the tenant's inbox;
* between manual changes the autoscaler moves the count within [min, max], one step per cooldown, and
  every change, manual or automatic, is recorded with its reason.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

from mysimbdp import apps
from mysimbdp.config import Config
from mysimbdp.errors import Conflict, NoApp, NotFound, TenantError
from mysimbdp.sandbox import SandboxRuntime
from mysimbdp.tenants import Tenant

from .instances import SLOT, Instances, container_name
from .state import StreamState, StreamStore


def _bounds(t: Tenant) -> tuple[int, int]:
    a = t.constraints.autoscale
    return (a.min_instances if a.enabled else 0), a.max_instances


def start(cfg: Config, store: StreamStore, t: Tenant, count: object, who: str) -> StreamState:
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 32:
        raise TenantError("count must be a whole number from 1 to 32")
    if apps.installed(cfg, t.name, "stream") is None:
        raise NoApp(
            f"tenant {t.name} has no stream ingest app",
            hint="install one with `mysimbdp tenant update NAME --stream-app DIR`",
        )
    low, high = _bounds(t)
    for _ in range(20):
        st = store.get(t.name)
        before = st.desired if st.running else 0
        wanted = (st.desired if st.running else 0) + count
        if wanted > high and before >= high:
            raise Conflict(
                f"{before} instance(s) already run; the maximum is {high}",
                hint="raise stream.autoscale.max_instances in the tenant's constraints",
            )
        after = max(low, min(high, wanted))
        if store.change(st, True, after):
            store.add_decision(
                t.name,
                "start",
                before,
                after,
                f"{who} asked for {count} more instance(s)"
                + (f" (capped at the maximum of {high})" if wanted > high else ""),
            )
            return store.get(t.name)
    raise Conflict("the stream's state keeps changing; try again")


def stop(
    cfg: Config, store: StreamStore, runtime: SandboxRuntime, t: Tenant, instance: str | None, who: str
) -> StreamState:
    for _ in range(20):
        st = store.get(t.name)
        if instance is None:
            if not st.running:
                return st
            if store.change(st, False, 0):
                store.add_decision(t.name, "stop", st.desired, 0, f"{who} stopped the stream")
                return store.get(t.name)
            continue
        running = Instances(cfg, runtime).of(t.name)
        if instance not in running or instance in st.stop_requests:
            raise NotFound(
                f"no running instance {instance!r} of {t.name}",
                hint="see the instances with GET /v1/tenants/<tenant>/stream",
            )
        after = max(0, st.desired - 1)
        if store.change(st, st.running, after):
            store.request_stop(t.name, instance)
            store.add_decision(t.name, "stop", st.desired, after, f"{who} stopped instance {instance}")
            return store.get(t.name)
    raise Conflict("the stream's state keeps changing; try again")


def wait_converged(
    cfg: Config, store: StreamStore, runtime: SandboxRuntime, tenant: str, timeout: float = 30.0
) -> bool:
    """Wait until the running instances match the desired state and each has reported since it started
    (an instance reports as soon as it listens to the platform's notices: from then on it consumes)."""
    deadline = time.monotonic() + timeout
    inst = Instances(cfg, runtime)
    while time.monotonic() < deadline:
        st = store.get(tenant)
        running = [i for i in inst.of(tenant).values() if i.state == "running"]
        want = st.desired if st.running else 0
        if len(running) == want and not st.stop_requests:
            latest: dict[str, datetime] = {}
            for r in store.reports(tenant, limit=200, days=1):
                if r["instance_started"] is not None:
                    latest.setdefault(r["instance"], r["instance_started"])
            if all(_reported_since(latest.get(i.slot), i.container.started_at) for i in running):
                return True
        time.sleep(0.2)
    return False


def _reported_since(process_start: datetime | None, started: str | None) -> bool:
    """Whether the latest report came from a process started in this container (not an earlier one)."""
    started_at = _docker_time(started)
    if process_start is None or started_at is None:
        return False
    if process_start.tzinfo is None:
        process_start = process_start.replace(tzinfo=timezone.utc)
    return process_start >= started_at


def status(cfg: Config, store: StreamStore, runtime: SandboxRuntime, t: Tenant, latest: dict | None = None) -> dict:
    """The stream of one tenant: state, instances with their health and latest report, recent decisions."""
    st = store.get(t.name)
    interval = float(t.constraints.stream["report_interval_seconds"])
    reports = {}
    for r in store.reports(t.name, limit=100):
        reports.setdefault(r["instance"], r)
    now = time.time()
    instances = []
    for slot, i in sorted(Instances(cfg, runtime).of(t.name).items()):
        last = (latest or {}).get(slot) or reports.get(slot)
        age = None
        if last is not None:
            end = last["received_at"].timestamp() if hasattr(last.get("received_at"), "timestamp") else now
            age = now - end
        grace = 3 * interval + 5
        if i.state != "running":
            health = f"exited ({i.container.exit_code})"
        elif age is None:  # no report yet: starting, or an app that never reports
            started = _docker_time(i.container.started_at)
            up = None if started is None else now - started.timestamp()
            health = "silent (no report since it started)" if up is not None and up > grace + 25 else "starting"
        elif age > grace:
            health = "silent"
        else:
            health = "healthy"
        instances.append(
            {
                "instance": slot,
                "state": i.state,
                "health": health,
                "started_at": i.container.started_at,
                "last_report": jsonable(last),
            }
        )
    return {
        "tenant": t.name,
        "running": st.running,
        "desired": st.desired if st.running else 0,
        "parked": sorted(st.parked),
        "stream_app": t.stream_app,
        "autoscale": t.constraints.stream["autoscale"],
        "report_interval_seconds": interval,
        "instances": instances,
        "backlog": store.backlog(t.name),
        "decisions": [jsonable(d) for d in store.decisions(t.name, limit=10)],
    }


def instance_log(cfg: Config, runtime: SandboxRuntime, tenant: str, slot: str, lines: int = 200) -> str:
    """The last ``lines`` lines an instance wrote: from its container while it runs, else from the log
    kept when its last container ended (how a tenant finds out why its app keeps crashing)."""
    if not SLOT.fullmatch(slot or ""):
        raise NotFound(f"no instance {slot!r} (instances are s0, s1, ...)")
    text = runtime.logs(container_name(tenant, slot), tail=lines)
    if not text:
        kept = sorted((cfg.paths.sandbox_runs / tenant).glob(f"stream-{slot}-*.log"))
        if not kept:
            raise NotFound(f"no log for instance {slot} of {tenant}")
        with open(kept[-1], "rb") as fh:
            fh.seek(max(0, kept[-1].stat().st_size - 256 * 1024))
            text = fh.read().decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:]) + "\n"


def _docker_time(text: str | None) -> datetime | None:
    """A time as Docker writes it (RFC 3339 in UTC, with nanoseconds); None if unset or unreadable."""
    if not text or text.startswith("0001-"):
        return None
    try:
        head, _, frac = text.rstrip("Z").partition(".")
        return datetime.fromisoformat(f"{head}.{(frac or '0')[:6]}+00:00")
    except ValueError:
        return None


def jsonable(d: dict | None) -> dict | None:
    if d is None:
        return None
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in d.items()}
