from table import NOTES
from mysimbdp_app.batch import run_batch

raise SystemExit(run_batch(NOTES))
