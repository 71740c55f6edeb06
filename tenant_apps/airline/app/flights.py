"""The airline tenant's table: one row per flight, partitioned by airport and day."""

from mysimbdp_app import Table

FLIGHTS = Table(
    name="flights",
    columns=[
        ("year", "int"),
        ("month", "int"),
        ("day", "int"),
        ("dep_time", "int"),
        ("sched_dep_time", "int"),
        ("dep_delay", "int"),
        ("arr_time", "int"),
        ("sched_arr_time", "int"),
        ("arr_delay", "int"),
        ("carrier", "text"),
        ("flight", "int"),
        ("tailnum", "text"),
        ("origin", "text"),
        ("dest", "text"),
        ("air_time", "int"),
        ("distance", "int"),
        ("hour", "int"),
        ("minute", "int"),
        ("time_hour", "timestamp"),
    ],
    # a flight is a carrier's flight number from one airport at one scheduled time on one day
    primary_key="((origin, year, month, day), carrier, flight, sched_dep_time)",
)
