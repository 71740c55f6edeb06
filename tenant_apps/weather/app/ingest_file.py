"""Batch app of the weather tenant: one staged CSV file of observations into weather.observations."""

from observations import OBSERVATIONS, fahrenheit_to_celsius
from mysimbdp_app.batch import run_batch

raise SystemExit(run_batch(OBSERVATIONS, transform=fahrenheit_to_celsius))
