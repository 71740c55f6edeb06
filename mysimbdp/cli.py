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
from .errors import MysimbdpError, TenantError

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
    print("ready")
    return 0


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
            extra = {k: v for k, v in part.items() if k not in ("ready", "running") and v not in (None, "")}
            print(f"  {name:<18} {mark:<8} " + " ".join(f"{k}={v}" for k, v in extra.items()))
        print("platform: " + ("ready" if st["ready"] else "NOT ready"))
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
    )
    print(f"tenant {t.name} updated: batch app {t.batch_app or '-'}, stream app {t.stream_app or '-'}")
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
            + f"[connection]\nhostname = {cfg.cassandra.contact_points[0]}\nport = {cfg.cassandra.port}\n"
        )
        argv = [str(exe), "--cqlshrc", str(rc), "--credentials", str(creds), "-u", login.username]
        if args.execute:
            argv += ["-e", args.execute]
        return subprocess.run(argv).returncode


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
        crash = Path(tempfile.gettempdir()) / f"{parser.prog}-crash-{os.getpid()}.log"
        crash.write_text(traceback.format_exc())
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
