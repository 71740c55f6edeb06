"""`mysimbdp reports` and `mysimbdp stream ...`: the operator's view and control of tenants' streams."""

from __future__ import annotations

import json

from mysimbdp import cli, names


def _store(cfg):
    from mysimbdp import db
    from mysimbdp.tenants import Registry

    from .state import StreamStore

    session = db.connect(cfg)
    return session, Registry(cfg, session), StreamStore(cfg, session)


def cmd_reports(cfg, args) -> int:
    from . import service

    session, registry, store = _store(cfg)
    try:
        tenants = [registry.get(names.tenant(args.tenant))] if args.tenant else registry.list()
        rows = []
        for t in tenants:
            rows.extend(store.reports(t.name, limit=args.limit))
        rows.sort(key=lambda r: r["received_at"], reverse=True)
        rows = rows[: args.limit]
    finally:
        session.cluster.shutdown()
    if args.json:
        print(json.dumps([service.jsonable(r) for r in rows], indent=2))
        return 0
    if not rows:
        print("no reports")
        return 0
    print(
        f"{'RECEIVED':<20} {'TENANT':<14} {'INST':<5} {'MSGS':>7} {'MSG/S':>8} {'AVG ms':>8} {'P95 ms':>8} {'ERR':>5} {'REJ':>5}"
    )
    for r in rows:
        secs = max((r["window_end"] - r["window_start"]).total_seconds(), 1e-3)
        print(
            f"{r['received_at'].strftime('%Y-%m-%d %H:%M:%S'):<20} {r['tenant']:<14} {r['instance']:<5} "
            f"{r['messages']:>7} {r['messages'] / secs:>8.1f} {r['avg_ms']:>8.2f} {r['p95_ms']:>8.2f} "
            f"{r['errors']:>5} {r['rejected']:>5}"
        )
    return 0


def cmd_stream(cfg, args) -> int:
    from mysimbdp.sandbox import runtime

    from . import service

    session, registry, store = _store(cfg)
    rt = runtime(cfg)
    try:
        t = registry.get(names.tenant(args.tenant))
        if args.action == "start":
            service.start(cfg, store, t, args.count, "the operator")
            service.wait_converged(cfg, store, rt, t.name)
        elif args.action == "stop":
            service.stop(cfg, store, rt, t, args.instance, "the operator")
            service.wait_converged(cfg, store, rt, t.name, timeout=cfg.stream.drain_timeout + 10)
        st = service.status(cfg, store, rt, t)
    finally:
        session.cluster.shutdown()
    if args.json:
        print(json.dumps(st, indent=2, default=str))
        return 0
    print(
        f"stream of {st['tenant']}: {'running' if st['running'] else 'stopped'}, {st['desired']} wanted, "
        f"autoscale {st['autoscale']['min_instances']}..{st['autoscale']['max_instances']}"
        f"{'' if st['autoscale']['enabled'] else ' (off)'}"
    )
    b = st["backlog"]
    if b["waiting"] is not None:
        print(f"  inbox: {b['written']} records written, {b['done']} turned into rows, {b['waiting']} waiting")
    for i in st["instances"]:
        r = i["last_report"] or {}
        print(
            f"  {i['instance']:<4} {i['state']:<8} {i['health']:<10} messages {r.get('messages', '-')} "
            f"avg {r.get('avg_ms', '-')} ms p95 {r.get('p95_ms', '-')} ms"
        )
    for d in st["decisions"][:5]:
        print(f"  {d['at'][:19]} {d['action']:<10} {d['instances_before']} -> {d['instances_after']}  {d['reason']}")
    return 0


def register(sub) -> None:
    s = sub.add_parser("reports", help="stream instances' timing reports, newest first")
    s.add_argument("--tenant", metavar="NAME")
    s.add_argument("--limit", type=int, default=30)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_reports)
    s = sub.add_parser("stream", help="status, start or stop a tenant's stream app instances")
    s.add_argument("action", choices=["status", "start", "stop"])
    s.add_argument("tenant")
    s.add_argument("instance", nargs="?", help="stop: one instance (default: all)")
    s.add_argument("--count", type=int, default=1, help="start: how many more instances")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_stream)


cli.EXTENSIONS.append(register)
