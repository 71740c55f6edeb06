"""The weather tenant's table: hourly observations, partitioned by station and month."""

from mysimbdp_app import Table

OBSERVATIONS = Table(
    name="observations",
    columns=[
        ("origin", "text"), ("year", "int"), ("month", "int"), ("day", "int"), ("hour", "int"),
        ("temp", "double"), ("dewp", "double"), ("humid", "double"), ("wind_dir", "int"),
        ("wind_speed", "double"), ("wind_gust", "double"), ("precip", "double"), ("pressure", "double"),
        ("visib", "double"), ("time_hour", "timestamp"),
    ],
    primary_key="((origin, year, month), time_hour)",
)
