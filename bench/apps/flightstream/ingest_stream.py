from table import FIELDS, FLIGHTS
from mysimbdp_app.stream import run_stream

raise SystemExit(run_stream(FLIGHTS, FIELDS))
