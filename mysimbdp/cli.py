"""``mysimbdp``: the operator's command line.

Thin on purpose: parse the arguments, build the configuration once, call the library, print. Library code
raises :class:`mysimbdp.errors.MysimbdpError`; this module turns it into one line on stderr and the
error's exit status (documented in docs/operations.md). Nothing here prints a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Callable

from . import config as config_mod
from .auth import MAX_PASSWORD
from .errors import MysimbdpError, TenantError, UsageError

PROG = "mysimbdp"


def _print_json(data) -> None:
    print(json.dumps(data, indent=2, default=str, sort_keys=True))


def _read_password(args) -> str:
    if not args.password_stdin:
        raise TenantError("the password is read from standard input only", hint="pass --password-stdin")
    line = sys.stdin.readline(MAX_PASSWORD + 2)  # bounded: a password, not a stream
    if not line:
        raise TenantError("no password on standard input")
    if len(line.rstrip("\r\n")) > MAX_PASSWORD:
        raise TenantError(f"the password is longer than {MAX_PASSWORD} characters")
    return line.rstrip("\r\n")


# --- platform ---------------------------------------------------------------------------------------


def cmd_up(cfg, args) -> int:
    from .services import platform

    def report(r) -> None:
        detail = f"  {r.detail}" if r.detail else ""
        print(f"  {r.part:<16} {r.outcome:<8} {r.seconds:6.1f}s{detail}", flush=True)

    print(f"mysimbdp up (state in {cfg.home})", flush=True)
    platform.up(cfg, report, managers_too=not args.no_managers)
    if not args.no_managers:
        print(f"dashboard: {cfg.dashboard_url()}/ ({_dashboard_login(cfg)})")
    print("ready")  # the last line, for scripts that wait for it
    return 0


def _dashboard_login(cfg) -> str:
    return f"tenants log in with their own password, the operator with the one in {cfg.paths.secrets}/api-operator.json"


def cmd_down(cfg, args) -> int:
    from .services import platform

    platform.down(cfg, lambda r: print(f"  {r.part:<16} {r.outcome}", flush=True))
    return 0


def cmd_status(cfg, args) -> int:
    from .services import platform

    st = platform.status(cfg)
    if args.json:
        _print_json(st)
    else:
        print(f"state folder: {st['home']}")
        for name, part in st["parts"].items():
            mark = "ready" if part.get("ready") else ("running" if part.get("running") else "down")
            shown = ("ready", "running", "nodes", "node_events")
            extra = {k: v for k, v in part.items() if k not in shown and v not in (None, "")}
            print(f"  {name:<18} {mark:<8} " + " ".join(f"{k}={v}" for k, v in extra.items()))
            for node in part.get("nodes") or ():  # Cassandra's nodes, as nodetool status shows them
                print(f"    node {node['address']:<15} {node['state']}  {_node_line(node)}")
            for line in _event_lines(part.get("node_events")):
                print("    " + line)
        print("platform: " + ("ready" if st["ready"] else "NOT ready"))
        print(f"dashboard: {cfg.dashboard_url()}/ ({_dashboard_login(cfg)})")
    return 0 if st["ready"] else 3


# --- tenants ----------------------------------------------------------------------------------------


def cmd_tenant_create(cfg, args) -> int:
    from . import constraints, names, tenants

    names.tenant(args.name)
    cons = constraints.load(Path(args.constraints))
    password = _read_password(args)
    reg = tenants.open_registry(cfg)
    t = reg.create(
        args.name,
        password,
        cons,
        batch_app=Path(args.batch_app) if args.batch_app else None,
        stream_app=Path(args.stream_app) if args.stream_app else None,
        show=_show,
    )
    print(
        f"tenant {t.name} ready: keyspace {t.name}, topics tenants/{t.name}/..., "
        f"batch app {t.batch_app or '-'}, stream app {t.stream_app or '-'}"
    )
    return 0


def cmd_tenant_update(cfg, args) -> int:
    from . import constraints, tenants

    reg = tenants.open_registry(cfg)
    t = reg.update(
        args.name,
        constraints=constraints.load(Path(args.constraints)) if args.constraints else None,
        password=_read_password(args) if args.password_stdin else None,
        batch_app=Path(args.batch_app) if args.batch_app else None,
        stream_app=Path(args.stream_app) if args.stream_app else None,
        show=_show,
    )
    print(f"tenant {t.name} updated: batch app {t.batch_app or '-'}, stream app {t.stream_app or '-'}")
    return 0


def _show(line: str) -> None:
    """The apps' checks and dry runs, as they go (mysimbdp/appchecks.py)."""
    print(line, flush=True)


def cmd_tenant_rollback(cfg, args) -> int:
    from . import apps, names, tenants

    left, back = tenants.open_registry(cfg).rollback(names.tenant(args.name), args.app)
    print(f"tenant {args.name}: {args.app} app {left.ref} ({left.path.name}) -> {back.ref} ({back.path.name})")
    for v in apps.versions(cfg, args.name, args.app):
        print(f"  {v['version']}  {v['ref']}{'  (current)' if v['current'] else ''}")
    return 0


def cmd_tenant_list(cfg, args) -> int:
    from . import tenants

    items = [t.summary() for t in tenants.open_registry(cfg).list()]
    if args.json:
        _print_json(items)
    elif not items:
        print("no tenants")
    else:
        print(f"{'NAME':<20} {'STATE':<9} {'BATCH APP':<28} STREAM APP")
        for t in items:
            print(f"{t['name']:<20} {t['state']:<9} {t['batch_app'] or '-':<28} {t['stream_app'] or '-'}")
    return 0


def cmd_tenant_show(cfg, args) -> int:
    from . import names, tenants

    t = tenants.open_registry(cfg).get(names.tenant(args.name), ready=False)
    data = t.summary()
    data["constraints"] = t.constraints.raw
    _print_json(data)
    return 0


def cmd_tenant_delete(cfg, args) -> int:
    from . import names, tenants

    names.tenant(args.name)
    if not args.yes:
        raise TenantError(f"deleting {args.name} drops its keyspace and all its data", hint="add --yes to confirm")
    tenants.open_registry(cfg).delete(args.name)
    print(f"tenant {args.name} deleted")
    return 0


# --- backups ----------------------------------------------------------------------------------------

BACKUP_ACTIONS = ("list", "verify", "prune")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""  # pragma: no cover


def _node_line(node: dict) -> str:
    """What `status` and `node status` print of a Cassandra node after its state and address."""
    load = "?" if node["load_mib"] is None else f"{node['load_mib']} MiB"
    return f"load {load:<12} owns {node['owns_pct']}%  cql {node['cql']}"


def _event_lines(events) -> list[str]:
    """The node watch's latest up/down events (nodewatch.py), newest first."""
    return [f"{e['at']}  {e['address']:<15} {e['state']:<5} {e['detail']}" for e in events or ()]


def cmd_node(cfg, args) -> int:
    """``mysimbdp node status|stop|start|restart|repair [N]``: the managed Cassandra nodes, one at a time;
    ``mysimbdp node replicate``: every keyspace to the configured replication, then repaired."""
    from .services import cassandra_node

    if not cfg.cassandra.managed:
        raise UsageError("the platform runs no Cassandra node of its own (cassandra.managed = false)")
    action, index = args.action, args.index
    if action == "status":
        part = cassandra_node.status(cfg)
        for node in part.get("nodes") or ():
            print(f"{node['state']}  {node['address']:<15} {_node_line(node)}")
        print("schema agreement: " + ("yes" if part.get("schema_agreement") else "NO"))
        if part.get("node_events"):
            print("latest node events:")
            for line in _event_lines(part["node_events"]):
                print("  " + line)
        if part.get("ready"):
            fewer = cassandra_node.replicate(cfg, dry_run=True)
            if fewer:
                print(
                    f"keyspaces not yet replicated as configured: {', '.join(fewer[:10])}"
                    + (f" and {len(fewer) - 10} more" if len(fewer) > 10 else "")
                    + " (mysimbdp node replicate)"
                )
        return 0 if part.get("ready") else 3
    if action == "replicate":
        changed = cassandra_node.replicate(cfg, progress=print)
        print(
            f"{len(changed)} keyspace{'s' if len(changed) != 1 else ''} changed; "
            f"every keyspace has replication {cassandra_node._replication_text(cfg.replication_map())}"
        )
        return 0
    if action == "repair":
        done = cassandra_node.repair(cfg, index)
        print(f"repaired node{'s' if len(done) > 1 else ''} {', '.join(map(str, done))}")
        return 0
    if index is None:
        raise UsageError(f"node {action} needs the node's number", hint=f"mysimbdp node {action} 2")
    if action in ("stop", "restart"):
        was = cassandra_node.stop_node(cfg, index)
        print(f"node {index}: {'stopped' if was else 'was not running'}")
    if action in ("start", "restart"):
        print(f"node {index}: {cassandra_node.start_node(cfg, index)}")
    return 0


def cmd_backup(cfg, args) -> int:
    from . import backup, db, names

    words = list(args.targets)
    if words and words[0] in BACKUP_ACTIONS:
        return {"list": _backup_list, "verify": _backup_verify, "prune": _backup_prune}[words[0]](cfg, args, words[1:])
    if sum((bool(words), args.all, args.scheduled)) != 1:
        raise UsageError("name the tenants to back up, or --all", hint="or: backup list | verify BACKUP | prune")
    kind = "scheduled" if args.scheduled else "manual"
    session = db.connect(cfg)
    failed = 0
    try:
        if words:
            tenants = [names.tenant(w) for w in words]
        elif args.all:
            tenants = [t.name for t in backup.Registry(cfg, session).list() if t.state == "ready"]
        else:
            tenants = backup.scheduled_tenants(cfg, session)
        for name in tenants:
            try:
                b = backup.backup(cfg, session, name, kind=kind)
            except MysimbdpError as exc:
                if len(tenants) == 1 and not args.scheduled:
                    raise
                failed += 1
                print(f"{PROG}: error: backup of {name}: {exc.one_line()}", file=sys.stderr, flush=True)
                continue
            print(f"backup {b.name}: {len(b.tables)} tables, {b.files} files, {_size(b.size)} in {b.path.parent}")
        if args.scheduled:
            for b in backup.prune(cfg):
                print(f"pruned {b.name} (retention: backup.keep {cfg.backup.keep}, keep_days {cfg.backup.keep_days})")
    finally:
        session.cluster.shutdown()
    return 1 if failed else 0


def _backup_list(cfg, args, rest: list[str]) -> int:
    from . import backup, names

    if len(rest) > 1:
        raise UsageError("backup list takes one tenant at most")
    items = backup.list_backups(cfg, names.tenant(rest[0]) if rest else None)
    if args.json:
        _print_json([b.summary() for b in items])
    elif not items:
        print(f"no backups in {cfg.backup_folder}")
    else:
        print(f"{'BACKUP':<44} {'TENANT':<20} {'KIND':<10} {'SIZE':>10} {'FILES':>6}  TABLES")
        for b in items:
            tail = f"PROBLEM: {b.problem}" if b.problem else ", ".join(b.tables)
            print(f"{b.name:<44} {b.tenant:<20} {b.kind:<10} {_size(b.size):>10} {b.files:>6}  {tail}")
    return 0


def _backup_verify(cfg, args, rest: list[str]) -> int:
    from . import backup

    if len(rest) != 1:
        raise UsageError("backup verify takes one backup (a name from `backup list`, or a path)")
    path = backup.find(cfg, rest[0])
    manifest = backup.verify(path)
    size = sum(f["size"] for f in manifest["files"].values())
    print(f"backup {path.name} is whole: {len(manifest['files'])} files, {_size(size)}, each as its manifest says")
    return 0


def _backup_prune(cfg, args, rest: list[str]) -> int:
    from . import backup

    if rest:
        raise UsageError("backup prune takes no tenant: retention applies to every tenant's scheduled backups")
    gone = backup.prune(cfg, dry_run=args.dry_run)
    for b in gone:
        print(f"{'would prune' if args.dry_run else 'pruned'} {b.name}")
    if not gone:
        print("nothing to prune")
    return 0


def cmd_restore(cfg, args) -> int:
    from . import backup, db, names

    tenant = names.tenant(args.tenant)
    target = names.tenant(args.as_name) if args.as_name else tenant
    password = _read_password(args) if args.password_stdin else None
    session = db.connect(cfg)
    try:
        r = backup.restore(
            cfg, session, tenant, args.source, as_name=target, overwrite=args.overwrite, password=password
        )
    finally:
        session.cluster.shutdown()
    made = " (made from the backup's registry row: it logs in with " + (
        "the new password)" if password else "the password it had then)"
    )
    print(
        f"tenant {r.tenant} restored from {r.backup}{made if r.rebuilt else ''}: "
        f"tables loaded {', '.join(r.tables_loaded) or '-'}; tables created {', '.join(r.tables_created) or '-'}; "
        f"{r.receipts} receipts put back"
    )
    return 0


# --- cqlsh ------------------------------------------------------------------------------------------


def cmd_cqlsh(cfg, args) -> int:
    from . import db, names, tenants

    if args.tenant:
        tenants.open_registry(cfg).get(names.tenant(args.tenant), ready=False)  # "no tenant X" if it is not one
        login = tenants.cassandra_login(cfg, args.tenant)
        keyspace = args.tenant
    else:
        login = db.operator_login(cfg)
        keyspace = None
    exe = Path(sys.executable).with_name("cqlsh")
    if not exe.exists():
        raise MysimbdpError("cqlsh is not installed in this environment", hint="run `make setup`")
    cfg.paths.run.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cfg.paths.run) as tmp:
        creds = Path(tmp) / "credentials"
        creds.write_text(f"[PlainTextAuthProvider]\nusername = {login.username}\npassword = {login.password}\n")
        os.chmod(creds, 0o600)
        rc = Path(tmp) / "cqlshrc"
        rc.write_text(
            f"[authentication]\ncredentials = {creds}\n"
            + (f"keyspace = {keyspace}\n" if keyspace else "")
            + f"[connection]\nhostname = {cfg.contact_points[0]}\nport = {cfg.cassandra.port}\n"
        )
        argv = [str(exe), "--cqlshrc", str(rc), "--credentials", str(creds), "-u", login.username]
        if args.execute:
            argv += ["-e", args.execute]
        return subprocess.run(argv).returncode


def cmd_compose(cfg, args) -> int:
    """``mysimbdp compose build`` (the images docker-compose.yml runs); ``run``, ``init`` and ``health``: what
    the Compose file's services run (services/compose.py)."""
    from .services import compose

    if args.action == "build":
        tag = compose.build(cfg)
        print(f"{tag} (also {compose.IMAGE}:latest); {cfg.source / compose.ENV_FILE} written")
        print(f"next: cd {cfg.source} && docker-compose up -d")
        return 0
    if args.action == "init":
        compose.init(cfg, watch=args.watch)
        print("ready")
        return 0
    if not args.service:
        raise UsageError(f"compose {args.action} needs a service: one of {', '.join(compose.services(cfg))}")
    if args.action == "health":
        return 0 if compose.healthy(cfg, args.service) else 1
    compose.run(cfg, args.service)  # does not return
    return 70


# --- wiring -----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Operate the mysimbdp platform.")
    p.add_argument("--home", help="state folder (default: $MYSIMBDP_HOME or ./state in the checkout)")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser("up", help="start whatever is not running and wait until each part is usable")
    s.add_argument("--no-managers", action="store_true", help="only the services (Cassandra, Mosquitto, Docker)")
    s.set_defaults(func=cmd_up)
    s = sub.add_parser("down", help="stop the platform")
    s.set_defaults(func=cmd_down)
    s = sub.add_parser("status", help="report each part (exit 0 when all are ready, 3 otherwise)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)

    t = sub.add_parser("tenant", help="create, list, show, update and delete tenants")
    tsub = t.add_subparsers(dest="tenant_command", metavar="ACTION", required=True)
    s = tsub.add_parser("create", help="create a tenant (password from standard input)")
    s.add_argument("name")
    s.add_argument("--constraints", required=True, metavar="FILE", help="constraints JSON (see constraints/)")
    s.add_argument("--batch-app", metavar="DIR")
    s.add_argument("--stream-app", metavar="DIR")
    s.add_argument("--password-stdin", action="store_true", help="read the tenant's password from stdin")
    s.set_defaults(func=cmd_tenant_create)
    s = tsub.add_parser("update", help="change a tenant's constraints, password or apps")
    s.add_argument("name")
    s.add_argument("--constraints", metavar="FILE")
    s.add_argument("--batch-app", metavar="DIR")
    s.add_argument("--stream-app", metavar="DIR")
    s.add_argument("--password-stdin", action="store_true")
    s.set_defaults(func=cmd_tenant_update)
    s = tsub.add_parser("rollback", help="return a tenant's app to the version installed before the current one")
    s.add_argument("name")
    s.add_argument("--app", required=True, choices=("batch", "stream"), help="which of its apps")
    s.set_defaults(func=cmd_tenant_rollback)
    s = tsub.add_parser("list", help="list tenants")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_tenant_list)
    s = tsub.add_parser("show", help="show one tenant")
    s.add_argument("name")
    s.set_defaults(func=cmd_tenant_show)
    s = tsub.add_parser("delete", help="delete a tenant and its data")
    s.add_argument("name")
    s.add_argument("--yes", action="store_true", help="confirm")
    s.set_defaults(func=cmd_tenant_delete)

    s = sub.add_parser(
        "backup",
        help="back up tenants (or: backup list, backup verify BACKUP, backup prune)",
        usage="%(prog)s [-h] [TENANT ... | --all | --scheduled] | list [TENANT] [--json] | verify BACKUP | "
        "prune [--dry-run]",
        description="Back up tenants into the backup folder (backup.folder); list, verify or prune backups.",
    )
    s.add_argument("targets", nargs="*", metavar="TENANT", help="tenants to back up, or list/verify/prune")
    s.add_argument("--all", action="store_true", help="every ready tenant")
    s.add_argument("--scheduled", action="store_true", help="what the schedule does: backup.tenants, then prune")
    s.add_argument("--json", action="store_true", help="(list) as JSON")
    s.add_argument("--dry-run", action="store_true", help="(prune) only say what would go")
    s.set_defaults(func=cmd_backup)
    s = sub.add_parser("restore", help="restore a tenant from a backup (checked against its manifest first)")
    s.add_argument("tenant", metavar="TENANT")
    s.add_argument(
        "--from", dest="source", required=True, metavar="BACKUP", help="a name from `backup list`, or a path"
    )
    s.add_argument("--as", dest="as_name", metavar="NEW", help="into another tenant (made from the backup if missing)")
    s.add_argument("--overwrite", action="store_true", help="replace the rows the tenant has in the backup's tables")
    s.add_argument("--password-stdin", action="store_true", help="a tenant made again gets this password")
    s.set_defaults(func=cmd_restore)

    s = sub.add_parser(
        "node",
        help="the managed Cassandra nodes: status, stop, start, restart or repair one; replicate every keyspace",
        description="replicate: give every keyspace the configured replication (after cassandra.nodes went from "
        "1 to 3, say), then repair it so the new replicas hold what the old ones did",
    )
    s.add_argument("action", choices=("status", "stop", "start", "restart", "repair", "replicate"))
    s.add_argument("index", nargs="?", type=int, help="the node's number (1 to cassandra.nodes); repair: all if none")
    s.set_defaults(func=cmd_node)

    s = sub.add_parser(
        "compose",
        help="the platform in containers: build its images for docker-compose.yml (the other actions are what "
        "the file's services run)",
    )
    s.add_argument("action", choices=("build", "run", "init", "health"))
    s.add_argument("service", nargs="?", help="run, health: cassandra-N, mosquitto, batch-api, ...")
    s.add_argument("--watch", type=float, default=0.0, metavar="S", help="init: then keep the firewall every S s")
    s.set_defaults(func=cmd_compose)

    s = sub.add_parser("cqlsh", help="a CQL shell as the operator, or as a tenant with --tenant")
    s.add_argument("--tenant", metavar="NAME")
    s.add_argument("-e", "--execute", metavar="STATEMENT", help="run one statement and exit")
    s.set_defaults(func=cmd_cqlsh)

    for extend in EXTENSIONS:
        extend(sub)
    return p


#: the batch and stream parts add their commands here (jobs, reports, instances...)
EXTENSIONS: list[Callable[[argparse._SubParsersAction], None]] = []


def run(argv: list[str] | None, command_line: Callable[[], argparse.ArgumentParser] = build_parser) -> int:
    parser = command_line()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        cfg = config_mod.load({"home": args.home} if args.home else None)
        return args.func(cfg, args)
    except MysimbdpError as exc:
        print(f"{parser.prog}: error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # noqa: BLE001 - the one place that turns a bug into one line
        # a new file of a random name, 0600, never through a link planted in the shared /tmp
        fd, crash = tempfile.mkstemp(prefix=f"{parser.prog}-crash-", suffix=".log")
        with os.fdopen(fd, "w") as fh:
            fh.write(traceback.format_exc())
        print(f"{parser.prog}: internal error: {type(exc).__name__}: {exc} (details in {crash})", file=sys.stderr)
        return 70


def main(argv: list[str] | None = None) -> int:
    _load_extensions()
    return run(argv)


def _load_extensions() -> None:
    """Commands of the batch and stream managers register themselves on import."""
    import importlib

    for module in ("batchingestmanager.commands", "streamingestmanager.commands"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


if __name__ == "__main__":
    sys.exit(main())
