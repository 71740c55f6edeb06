"""`mysimbdp jobs`: the operator's view of batch receipts, and `mysimbdp jobs replay JOB`."""

from __future__ import annotations

import json

from mysimbdp import cli, names
from mysimbdp.errors import NotFound, UsageError
from mysimbdp.jobs import JobStatus


def cmd_jobs(cfg, args) -> int:
    from mysimbdp import db
    from mysimbdp.jobs import JobStore
    from mysimbdp.tenants import Registry

    if args.action:
        if args.action[0] != "replay" or len(args.action) != 2:
            raise UsageError("jobs takes no argument but `replay JOB`", hint="mysimbdp jobs replay JOB [--tenant T]")
        return cmd_replay(cfg, args, args.action[1])
    if args.status:
        JobStatus.parse(args.status)
    session = db.connect(cfg)
    try:
        registry = Registry(cfg, session)
        store = JobStore(cfg, session)
        tenants = [names.tenant(args.tenant)] if args.tenant else [t.name for t in registry.list()]
        if args.tenant:
            registry.get(args.tenant, ready=False)
        jobs = []
        for t in tenants:
            jobs.extend(store.list(t, status=args.status, limit=args.limit))
        jobs.sort(key=lambda j: j.created_at or 0, reverse=True)
        jobs = jobs[: args.limit]
    finally:
        session.cluster.shutdown()
    if args.json:
        print(json.dumps([j.to_dict() for j in jobs], indent=2, default=str))
        return 0
    if not jobs:
        print("no jobs")
        return 0
    print(
        f"{'CREATED':<20} {'TENANT':<14} {'STATUS':<10} {'ROWS':>9} {'REJ':>6} {'SECS':>7} {'SIZE':>10}  FILE / REASON"
    )
    for j in jobs:
        created = j.created_at.strftime("%Y-%m-%d %H:%M:%S") if j.created_at else "-"
        rows = "-" if j.rows_ingested is None else str(j.rows_ingested)
        rej = "-" if j.rows_rejected is None else str(j.rows_rejected)
        secs = "-" if j.seconds is None else f"{j.seconds:.2f}"
        tail = j.file_name + (f"  ({j.reason})" if j.reason else "")
        print(f"{created:<20} {j.tenant:<14} {j.status:<10} {rows:>9} {rej:>6} {secs:>7} {j.size:>10}  {tail}")
    return 0


def cmd_replay(cfg, args, job_id: str) -> int:
    """Stage a failed job's file again (after its app was fixed): batchingestmanager/uploads.py."""
    from mysimbdp import db
    from mysimbdp.jobs import JobStore
    from mysimbdp.tenants import Registry

    from .uploads import Uploads

    session = db.connect(cfg)
    try:
        registry, store = Registry(cfg, session), JobStore(cfg, session)
        if args.tenant:
            tenant = registry.get(names.tenant(args.tenant))
        else:  # job ids are unique over all tenants: find its owner
            tenant = next((t for t in registry.list() if t.state == "ready" and _has_job(store, t.name, job_id)), None)
            if tenant is None:
                raise NotFound(f"no job {job_id[:40]!r} of any ready tenant")
        job = Uploads(cfg, store).replay(tenant, job_id)
    finally:
        session.cluster.shutdown()
    print(f"job {job.replay_of} of {tenant.name} replayed as job {job.job_id} ({job.file_name}, {job.status})")
    return 0


def _has_job(store, tenant: str, job_id: str) -> bool:
    try:
        store.get(tenant, job_id)
        return True
    except NotFound:
        return False


def register(sub) -> None:
    s = sub.add_parser(
        "jobs",
        help="batch ingestion receipts, newest first (or: jobs replay JOB)",
        usage="%(prog)s [-h] [--tenant NAME] [--status S] [--limit N] [--json] | replay JOB [--tenant NAME]",
        description="List batch receipts, or stage a failed job's file again from the quarantine "
        "(`replay JOB`, once its app is fixed: a new job that names the failed one).",
    )
    s.add_argument("action", nargs="*", metavar="replay JOB", help="replay the failed job JOB")
    s.add_argument("--tenant", metavar="NAME")
    s.add_argument("--status", metavar="S", help="staged, running, retrying, succeeded or failed")
    s.add_argument("--limit", type=int, default=50)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_jobs)


cli.EXTENSIONS.append(register)
