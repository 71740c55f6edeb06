from table import FLIGHTS
from mysimbdp_app.batch import run_batch

raise SystemExit(run_batch(FLIGHTS))
