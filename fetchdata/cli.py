"""fetchdata: send a folder of files to mysimbdp.

    fetchdata -u USER -p PASS [-d DIR] [--server URL]

It fetches the tenant's constraints, checks each file locally (format by name and by content, size),
splits a too-large CSV into parts when the constraints allow it, uploads what passes with a progress bar,
and prints one line per file: ``uploaded``, ``refused`` (by the constraints, and why: not sent),
``skipped`` (hidden files, folders, content sent before) or ``failed`` (and why). The password may also
come from $MYSIMBDP_PASSWORD or a prompt.

Exit status, for scripts: 0 every file was sent (or had been already); 1 some file failed on its way (the
server refused it, the upload broke off); 4 some files were refused by the constraints and not sent, the
others were; 65 nothing was sent: every file was refused by the constraints. 2, 69, 77 as in
docs/operations.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mysimbdp_client import Client
from mysimbdp_client import errors as sdk
from mysimbdp_client.uploads import Sent

from mysimbdp import constraints as constraints_mod
from mysimbdp import credentials, names
from mysimbdp.errors import (
    AuthenticationFailed,
    ConstraintViolation,
    InvalidConstraints,
    InvalidName,
    MysimbdpError,
    ServiceError,
    TenantError,
    TooManyAttempts,
    TooManyFiles,
    UsageError,
    exit_status,
)
from mysimbdp.filecheck import ContentChecker

from . import sources
from .progress import Bar

DEFAULT_SERVER = "http://127.0.0.1:8801"
MIN_RATE = 32 * 1024  # bytes a second: the upload API wants 1 MiB of a body every 60 s
EXIT_FAILED = 1  # some file failed on its way
EXIT_REFUSED = 4  # some files were refused by the constraints (not sent); the others were sent
EXIT_ALL_REFUSED = 65  # nothing was sent: every file was refused by the constraints


class ServerUnreachable(ServiceError):
    """The upload API does not answer."""


class SourceChanged(TenantError):
    """The local file changed after it was checked: what was checked is not what would be sent."""


def platform_error(exc: sdk.MysimbdpError) -> MysimbdpError:
    """The client SDK's error as the platform error this command prints and exits with (docs/operations.md):
    wrong login 77, platform away 69, refused by the constraints (counted per file), other refusals 65."""
    code = None if exc.code == "error" else exc.code
    if isinstance(exc, sdk.AuthenticationError):
        if exc.code == "too_many_attempts":
            return TooManyAttempts(exc.message, retry_after=_whole(exc.retry_after), hint=exc.hint)
        return AuthenticationFailed("wrong user name or password", hint="check -u/-p")
    if isinstance(exc, sdk.TransportError):
        if exc.code == "upload_broke_off":
            return ServerUnreachable(exc.message, hint="run fetchdata again: it resumes where it stopped")
        return ServerUnreachable(exc.message, hint="is it running? check --server" if exc.hint else None)
    if isinstance(exc, sdk.SourceChangedError):
        return SourceChanged(exc.message, hint=exc.hint)
    if exc.status is None:  # the upload was ended on the server, or another client holds it
        later = " later" if exc.code == "upload_busy" else ""
        return MysimbdpError(exc.message, hint=f"run fetchdata again{later}")
    if exc.code == "too_many_files":
        return TooManyFiles(exc.message, hint=exc.hint)
    if exc.status in (413, 415, 422):
        return ConstraintViolation(exc.message, hint=exc.hint, code=code)
    if exc.status >= 500:
        return ServiceError(
            f"{exc.action}: the server answered {exc.status}: {exc.message}",
            hint=exc.hint,
            retry_after=_whole(exc.retry_after),
        )
    return TenantError(f"{exc.action}: {exc.message}", hint=exc.hint, code=code)


def _whole(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds)


def upload(client: Client, part: sources.Source, progress, rate: int | None) -> Sent:
    try:
        return client.uploads.upload(part, progress, rate=rate)
    except sdk.MysimbdpError as exc:
        raise platform_error(exc) from None


@dataclass
class Planned:
    path: Path
    parts: list[sources.Source]


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def plan(path: Path, cons: constraints_mod.Constraints) -> Planned:
    """Check one local file against the constraints; raise ConstraintViolation with the reason to skip it."""
    names.safe_file_name(path.name)
    fmt = constraints_mod.check_file_name(cons, path.name)
    size = path.stat().st_size
    if size == 0:
        raise ConstraintViolation("the file is empty")
    checker = ContentChecker(fmt, "the file")
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            checker.feed(chunk)
    checker.finish()
    if size <= cons.max_file_size:
        return Planned(path, [sources.whole(path).with_checksum()])
    if not cons.split_large_files or fmt not in ("csv", "tsv"):
        raise ConstraintViolation(
            f"{_human(size)} is over the maximum file size of {_human(cons.max_file_size)}"
            + ("" if fmt not in ("csv", "tsv") else " and splitting is not allowed")
        )
    try:
        parts = sources.split(path, cons.max_file_size)
    except sources.CannotSplit as exc:
        raise ConstraintViolation(f"too large, and cannot be split: {exc}") from None
    return Planned(path, [p.with_checksum() for p in parts])


def run(args) -> int:
    if args.limit_rate is not None and args.limit_rate < MIN_RATE:
        raise UsageError(
            f"--limit-rate must be at least {MIN_RATE} bytes a second",
            hint="the upload API cuts a body that brings less than 1 MiB a minute",
        )
    folder = Path(args.dir)
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder", hint="use -d DIR")
    password = credentials.client_password(args.password, args.user)
    client = Client(args.user, password, batch_url=args.server)
    try:
        raw = client.uploads.constraints()
    except sdk.MysimbdpError as exc:
        raise platform_error(exc) from None
    try:
        cons = constraints_mod.parse(raw, "the server's constraints")
    except InvalidConstraints as exc:
        raise ServiceError(f"the server sent constraints this fetchdata does not understand: {exc.message}") from None

    entries = sorted(folder.iterdir(), key=lambda p: p.name)
    failed = uploaded = skipped = refused = already = 0
    limit_hit: str | None = None
    show_bar = sys.stderr.isatty() and not args.quiet
    t_all = time.monotonic()
    for path in entries:
        label = path.name
        if path.name.startswith("."):
            print(f"skipped   {label}: a hidden file (names starting with '.' are not sent)")
            skipped += 1
            continue
        if path.is_dir():
            print(f"skipped   {label}/: a folder (only files directly in {folder} are sent)")
            skipped += 1
            continue
        if not path.is_file():
            print(f"skipped   {label}: not a regular file")
            skipped += 1
            continue
        try:
            planned = plan(path, cons)
        except (ConstraintViolation, InvalidName) as exc:
            print(f"refused   {label}: {exc.message.removeprefix('the file: ').removeprefix(path.name + ': ')}")
            refused += 1
            continue
        except OSError as exc:
            print(f"failed    {label}: cannot read it: {exc.strerror}")
            failed += 1
            continue
        for part in planned.parts:
            plabel = part.name if part.name == label else f"{label} -> {part.name}"
            if limit_hit:
                print(f"failed    {plabel}: not sent: {limit_hit}")
                failed += 1
                continue
            bar = Bar(part.name, part.size) if show_bar else None
            try:
                sent = upload(client, part, bar.update if bar else None, args.limit_rate)
            except TooManyFiles as exc:
                if bar:
                    bar.close()
                limit_hit = exc.message
                print(f"failed    {plabel}: {exc.message}")
                failed += 1
                continue
            except ConstraintViolation as exc:
                if bar:
                    bar.close()
                print(f"failed    {plabel}: refused by the server: {exc.message}")
                failed += 1
                continue
            except (AuthenticationFailed, ServerUnreachable):
                if bar:
                    bar.close()
                raise
            except MysimbdpError as exc:
                if bar:
                    bar.close()
                print(f"failed    {plabel}: {exc.one_line()}")
                failed += 1
                continue
            if bar:
                bar.close()
            if sent.status == "duplicate":
                print(f"skipped   {plabel}: already uploaded (job {sent.job_id})")
                skipped += 1
                already += 1
            else:
                rate = (part.size - sent.resumed_from) / sent.seconds / (1 << 20) if sent.seconds else 0
                resumed = f", resumed at {_human(sent.resumed_from)}" if sent.resumed_from else ""
                print(
                    f"uploaded  {plabel} ({_human(part.size)} in {sent.seconds:.2f}s, {rate:.1f} MB/s{resumed}): job {sent.job_id}"
                )
                uploaded += 1
    took = time.monotonic() - t_all
    print(
        f"{uploaded} uploaded, {refused} refused, {skipped} skipped, {failed} failed in {took:.1f}s"
        + (f" - see the receipts with: curl -u {args.user} {args.server}/v1/jobs" if uploaded else "")
    )
    if failed:
        return EXIT_FAILED
    if refused:
        return EXIT_REFUSED if uploaded or already else EXIT_ALL_REFUSED
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fetchdata", description="Send a folder of files to mysimbdp for ingestion.")
    p.add_argument("-u", "--user", required=True, help="your tenant name")
    p.add_argument("-p", "--password", help="your password (else $MYSIMBDP_PASSWORD, else a prompt)")
    p.add_argument("-d", "--dir", default="client-input-dir", help="the folder to send (default: client-input-dir)")
    p.add_argument(
        "--server",
        default=os.environ.get("MYSIMBDP_SERVER", DEFAULT_SERVER),
        help=f"the upload API (default: $MYSIMBDP_SERVER or {DEFAULT_SERVER})",
    )
    p.add_argument("--limit-rate", type=int, metavar="BYTES_PER_S", help="send at most this many bytes a second")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return exit_status("fetchdata", lambda: run(args), interrupted="interrupted; run it again to resume")
