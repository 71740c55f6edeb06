"""The checks a tenant's app passes before it is installed (``tenant create`` and ``tenant update`` with
``--batch-app`` or ``--stream-app``), in this order, each one only if the one before passed:

1. **manifest**: ``app.json`` (mysimbdp/apps.py), its entry point for the kind, and a sample file for the
   kind (``"samples": {"batch": "sample.csv"}``, at most 1 MiB), which the dry run needs;
2. **compile**: every Python file of the app compiles. In the sandbox, as the app will run, and with a
   constant checker (``python3 -I``: nothing of the app is imported or run): compiling untrusted source
   can take the compiler's memory, stack or time without bound (deep nesting, huge literals), which the
   sandbox's limits hold and the platform process would not. An app of another runtime (mysimbdp/runtimes.py)
   with no Python file skips it;
3. **entry point**: the kind's entry point is among the files that compiled; for a JVM app, a jar whose
   manifest names a Main-Class that is in it; for a static app, an ELF executable for this machine that needs no
   dynamic loader (both read within bounds, by mysimbdp/runtimes.py);
4. **dry run** (mysimbdp/dryrun.py): the app on its sample, into a scratch keyspace dropped afterwards.

Everything runs on a copy of the folder taken first, and that copy is what is installed when all passed:
the tenant's folder may change meanwhile. When a check fails, :class:`AppRefused` says why (and where the
dry run's log is kept), nothing is installed, and the caller changes nothing else either. The result of each
check, the dry run's rows, rejects, seconds and the end of its log are shown as they come (``show``).
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from cassandra.cluster import Session

from . import apps, bounded, contract, dryrun, runtimes
from .config import Config
from .constraints import Constraints
from .errors import AppRefused
from .sandbox import Mount, RunSpec, runtime

COMPILE_MARK = "MYSIMBDP-COMPILE "
COMPILE_SECONDS = 120.0
MAX_COMPILE_ERRORS = 20
# Run with `python3 -I -S -B -c`: no folder of the app on sys.path, no site, no environment; compile() only
# parses and compiles, it runs nothing. One line of JSON at the end says what it found.
CHECKER = f"""
import json, os
files, errors = 0, []
for root, dirs, names in os.walk("/app"):
    dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
    for name in sorted(names):
        if not name.endswith(".py") or len(errors) >= {MAX_COMPILE_ERRORS}:
            continue
        path = os.path.join(root, name)
        rel = path[len("/app/"):][:200]
        files += 1
        try:
            with open(path, "rb") as fh:
                compile(fh.read(), rel, "exec", dont_inherit=True)
        except SyntaxError as exc:
            errors.append({{"file": rel, "line": exc.lineno or 0, "error": (type(exc).__name__ + ": " + str(exc.msg))[:200]}})
        except (ValueError, MemoryError, RecursionError, OverflowError) as exc:
            errors.append({{"file": rel, "line": 0, "error": (type(exc).__name__ + (": " + str(exc) if str(exc) else ""))[:200]}})
print({COMPILE_MARK!r} + json.dumps({{"files": files, "errors": errors}}), flush=True)
"""

Show = Callable[[str], None]


@dataclass
class Report:
    """What the checks of one app found, as shown to the operator."""

    tenant: str
    kind: str
    folder: str
    ref: str = ""
    steps: list[tuple[str, bool, str]] = field(default_factory=list)
    result: dryrun.Result | None = None
    log_path: Path | None = None
    log_tail: list[str] = field(default_factory=list)
    reason: str = ""
    announced: bool = False

    @property
    def passed(self) -> bool:
        return bool(self.steps) and all(ok for _, ok, _ in self.steps) and self.result is not None

    def step_line(self, step: tuple[str, bool, str]) -> str:
        name, ok, detail = step
        return f"  {name:<12} {'ok' if ok else 'FAILED':<7}{bounded.printable(detail, 400)}"

    def log_lines(self) -> list[str]:
        if self.log_path is None:
            return []
        head = f"  {'log':<12} kept in {self.log_path}" + (", its last lines:" if self.log_tail else " (empty)")
        return [head] + [f"    | {line}" for line in self.log_tail]


@contextlib.contextmanager
def vetted(
    cfg: Config,
    session: Session,
    tenant: str,
    constraints: Constraints,
    folders: dict[str, Path | None],
    *,
    uid: int | None = None,
    check: bool = True,
    show: Show | None = None,
) -> Iterator[dict[str, Path | None]]:
    """Check the apps in ``folders`` (kind -> folder, or None) for ``tenant`` and yield, for each kind, the
    copy that passed, to be installed; the copies are removed on the way out. ``uid``: the sandbox user the
    tenant's apps run as (None: a tenant not made yet, whose dry runs run as the platform's own sandbox
    user). ``check=False`` only reads the manifests and yields the folders as they are (tests of the
    runtime's own defences install apps that fail on purpose). AppRefused when an app fails a check."""
    given = {kind: Path(folder) for kind, folder in folders.items() if folder is not None}
    if not check or not given:
        for kind, folder in given.items():
            apps.read_manifest(folder, kind)
        yield dict(folders)
        return
    say = show or (lambda line: None)
    run_as = cfg.sandbox.uid_base if uid is None else uid
    reports = {kind: Report(tenant, kind, str(folder)) for kind, folder in given.items()}
    for kind, folder in given.items():  # every manifest first: nothing runs while one of them is wrong
        _manifest(reports[kind], folder, say)
    dryrun.sweep(cfg, session)
    copies: dict[str, Path] = {}
    try:
        for kind, folder in given.items():
            copies[kind] = _check(cfg, session, reports[kind], folder, constraints, run_as, say)
        yield {kind: copies.get(kind) for kind in folders}
    finally:
        for copy in copies.values():
            dryrun.remove_folder(copy.parent)


def _announce(report: Report, say: Show) -> None:
    if not report.announced:
        report.announced = True
        say(f"checking the {report.kind} app in {report.folder} for tenant {report.tenant}")


def _refuse(report: Report, step: str, why: str, say: Show) -> AppRefused:
    _announce(report, say)
    report.steps.append((step, False, why))
    report.reason = why
    say(report.step_line(report.steps[-1]))
    for line in report.log_lines():
        say(line)
    where = f"the dry run's log is kept in {report.log_path}; " if report.log_path else ""
    exc = AppRefused(
        f"the {report.kind} app in {report.folder} was refused: {bounded.printable(why, 400)}",
        hint=f"{where}nothing was installed",
    )
    exc.report = report
    return exc


def _passed(report: Report, step: str, detail: str, say: Show) -> None:
    report.steps.append((step, True, detail))
    say(report.step_line(report.steps[-1]))


def _manifest(report: Report, folder: Path, say: Show) -> dict:
    try:
        data = apps.read_manifest(folder, report.kind)
    except apps.InvalidApp as exc:
        raise _refuse(report, "manifest", exc.one_line(), say) from None
    report.ref = f"{data['name']}@{data['version']}"
    if data["sample"] is None:
        raise _refuse(
            report,
            "manifest",
            f'app.json names no sample for the {report.kind} dry run: add "samples": {{"{report.kind}": "FILE"}}'
            f" to it, with FILE a small cut of real data in the app folder (at most {apps.MAX_SAMPLE_BYTES >> 20}"
            " MiB)",
            say,
        )
    return data


def _check(
    cfg: Config, session: Session, report: Report, folder: Path, constraints: Constraints, uid: int, say: Show
) -> Path:
    """Every check of one app on a copy of it; return the copy (in its dry run's folder) when all passed."""
    kind = report.kind
    _announce(report, say)
    work = dryrun.new_folder(cfg, report.tenant)
    passed = False
    try:
        copy = work / "app"
        try:
            data, digest = apps.copy_checked(folder, kind, copy, uid)
        except apps.InvalidApp as exc:
            raise _refuse(report, "manifest", exc.one_line(), say) from None
        sample = copy / data["sample"]  # checked again on the copy: a regular file of at most 1 MiB
        size = sample.stat().st_size
        runtime = data["runtime"]
        on = f" ({runtime})" if runtime != runtimes.DEFAULT else ""
        _passed(report, "manifest", f"{report.ref}{on}, entry point {data['entrypoint']}, sample {data['sample']}"
                f" ({size:,} bytes)", say)  # fmt: skip
        if runtime == runtimes.DEFAULT or _python_files(copy):
            compiled = _compile(cfg, report, work, copy, constraints, uid, say)
        else:
            compiled = set()
            _passed(report, "compile", f"no Python files (a {runtime} app)", say)
        _entry_point(report, copy, data, compiled, say)
        app = apps.App.of(data, kind, copy, digest)
        report.log_path = dryrun.log_path(cfg, report.tenant, kind)
        limit = _limit(cfg, work, uid, constraints)
        say(f"  {'dry run':<12} ...    on {data['sample']} into scratch keyspace {work.name} (at most {limit})")
        try:
            with dryrun.scratch(cfg, session, work, report.tenant, uid, constraints) as s:
                run = dryrun.run_batch if kind == "batch" else dryrun.run_stream
                result = run(s, app, sample, report.log_path)
        except dryrun.Refused as exc:
            report.log_tail = dryrun.log_tail(report.log_path)
            raise _refuse(report, "dry run", str(exc), say) from None
        report.result = result
        report.log_tail = dryrun.log_tail(report.log_path, 10)
        found = "?" if result.rows_found is None else f"{result.rows_found:,}"
        _passed(
            report,
            "dry run",
            f"{result.rows:,} rows, {result.rejects:,} rejects from {result.records:,} records in"
            f" {result.seconds:.2f}s (the whole run: {result.run_seconds:.1f}s); {found} rows in its tables,"
            " dropped with the scratch keyspace",
            say,
        )
        for line in report.log_lines():
            say(line)
        passed = True
        return copy
    finally:
        if not passed:
            dryrun.remove_folder(work)


def _entry_point(report: Report, copy: Path, data: dict, compiled: set[str], say: Show) -> None:
    """The kind's entry point is what its runtime starts: a Python file that compiled, a jar with its Main-Class,
    a static executable."""
    entry, runtime = data["entrypoint"], data["runtime"]
    if runtime == runtimes.DEFAULT:
        if entry not in compiled:
            raise _refuse(report, "entry point", f"{entry} is not among the files that compiled", say)
        _passed(report, "entry point", f"{entry} is there and compiles", say)
        return
    try:
        what = runtimes.inspect_entry(runtime, copy / entry)  # the platform's copy: a regular file, bounded
    except (ValueError, OSError) as exc:
        raise _refuse(report, "entry point", f"{entry} {exc}", say) from None
    _passed(report, "entry point", f"{entry} is {what}", say)


def _limit(cfg: Config, work: Path, uid: int, constraints: Constraints) -> str:
    timeout = contract.batch_limits(cfg, dryrun.pseudo_tenant(work.name, uid, constraints)).timeout
    return f"{timeout:.0f}s" if timeout else "the platform's time limit"


def _compile(
    cfg: Config, report: Report, work: Path, copy: Path, constraints: Constraints, uid: int, say: Show
) -> set[str]:
    """Compile every Python file of the app in the sandbox; return the files that compiled (relative paths)."""
    limits = contract.batch_limits(cfg, dryrun.pseudo_tenant(work.name, uid, constraints))
    spec = RunSpec(
        name=f"mysimbdp-dryrun-{work.name}-compile",
        tenant=work.name,
        kind="dryrun",
        command=("python3", "-I", "-S", "-B", "-c", CHECKER),
        uid=uid,
        mounts=(Mount(copy, "/app"),),
        limits=dataclasses.replace(limits, timeout=min(limits.timeout or COMPILE_SECONDS, COMPILE_SECONDS)),
        labels={"mysimbdp.dryrun": work.name},
        log_path=work / "compile.log",
    )
    r = runtime(cfg).run(spec)
    found = None
    try:
        for line in reversed(bounded.tail(work / "compile.log", 64 << 10).decode("utf-8", "replace").splitlines()):
            if line.startswith(COMPILE_MARK):
                found = bounded.loads_json(line[len(COMPILE_MARK) :], max_bytes=64 << 10, max_depth=4)
                break
    except (OSError, ValueError):
        found = None
    if not r.ok or not isinstance(found, dict):
        why = "a file is too large or too deeply nested to compile within the tenant's limits"
        raise _refuse(report, "compile", f"the compile check {r.describe()}: {why}", say)
    errors = [e for e in found.get("errors", []) if isinstance(e, dict)]
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        where = f"{first.get('file')}, line {first.get('line')}" if first.get("line") else f"{first.get('file')}"
        raise _refuse(report, "compile", f"{where}: {first.get('error')}{more}", say)
    compiled = _python_files(copy)
    _passed(report, "compile", f"{len(compiled)} Python file{'s' if len(compiled) != 1 else ''}", say)
    return compiled


def _python_files(copy: Path) -> set[str]:
    """The app's Python files, as paths relative to it (the copy is the platform's: no links, bounded)."""
    return {str(p.relative_to(copy)) for p in copy.rglob("*.py") if p.is_file()}
