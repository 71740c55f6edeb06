"""`make bench`: every benchmark, one after the other (about 25 minutes); figures to bench/out/figures.jsonl.

Each benchmark puts mysimbdp next to a peer in the same run; bench/RESULTS.md has the figures and what they
mean. A benchmark that fails is reported and the others still run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNS = [
    ["batch_bench.py", "--rounds", "3"],
    ["stream_bench.py", "--messages", "200000", "--publishers", "2", "--instances", "2"],
    ["query_bench.py"],
    ["broker_persistence.py"],
]


def main() -> int:
    failed = []
    for argv in RUNS:
        print(f"\n### {' '.join(argv)}", flush=True)
        if subprocess.run([sys.executable, str(HERE / argv[0]), *argv[1:]]).returncode != 0:
            failed.append(argv[0])
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
