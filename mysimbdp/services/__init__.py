"""The services the platform runs on one machine: Cassandra, Mosquitto, the Docker engine and the
platform's own managers, each started, checked and stopped by :mod:`.platform`."""
