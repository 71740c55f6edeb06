"""Batch app of the weather tenant: one staged CSV file of observations into weather.observations."""

from observations import OBSERVATIONS
from mysimbdp_app.batch import run_batch


def fahrenheit_to_celsius(values: tuple) -> tuple:
    """This tenant stores temperatures in Celsius."""
    v = list(values)
    for i in (5, 6):  # temp, dewp
        if v[i] is not None:
            v[i] = round((v[i] - 32) * 5 / 9, 2)
    return tuple(v)


raise SystemExit(run_batch(OBSERVATIONS, transform=fahrenheit_to_celsius))
