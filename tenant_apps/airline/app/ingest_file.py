"""Batch app of the airline tenant: one staged CSV file of flights into airline.flights."""

from flights import FLIGHTS
from mysimbdp_app.batch import run_batch

raise SystemExit(run_batch(FLIGHTS))
