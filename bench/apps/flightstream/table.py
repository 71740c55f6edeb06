"""The benchmark's table: a real flight line, numbered and stamped by the publisher."""

from mysimbdp_app import Table

FIELDS = [
    "seq",
    "sent_us",
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
TYPES = {
    "seq": "bigint",
    "sent_us": "bigint",
    "carrier": "text",
    "tailnum": "text",
    "origin": "text",
    "dest": "text",
    "time_hour": "timestamp",
}
FLIGHTS = Table(
    name="flights",
    columns=[(f, TYPES.get(f, "int")) for f in FIELDS],
    primary_key="((origin, year, month, day), seq)",
)
