"""The weather tenant's table: hourly observations, partitioned by station and month."""

from mysimbdp_app import Table

OBSERVATIONS = Table(
    name="observations",
    columns=[
        ("origin", "text"),
        ("year", "int"),
        ("month", "int"),
        ("day", "int"),
        ("hour", "int"),
        ("temp", "double"),
        ("dewp", "double"),
        ("humid", "double"),
        ("wind_dir", "int"),
        ("wind_speed", "double"),
        ("wind_gust", "double"),
        ("precip", "double"),
        ("pressure", "double"),
        ("visib", "double"),
        ("time_hour", "timestamp"),
    ],
    primary_key="((origin, year, month), time_hour)",
)


def fahrenheit_to_celsius(values: tuple) -> tuple:
    """This tenant stores temperatures (temp, dewp) in Celsius; the source data is in Fahrenheit."""
    v = list(values)
    for i in (5, 6):
        if v[i] is not None:
            v[i] = round((v[i] - 32) * 5 / 9, 2)
    return tuple(v)
