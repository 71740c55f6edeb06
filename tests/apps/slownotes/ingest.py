"""notes, written slowly (about 1 ms a row) and giving up on Cassandra after 3 s: for fault tests."""

import time

from table import NOTES
from mysimbdp_app.batch import run_batch


def slowly(values):
    time.sleep(0.001)
    return values


raise SystemExit(run_batch(NOTES, transform=slowly, concurrency=8, batch_rows=1, retry_for=3))
