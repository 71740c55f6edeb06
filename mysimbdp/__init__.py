"""mysimbdp's shared core: configuration, errors, tenants and auth, the Cassandra session, the broker's
users, and the sandbox in which tenant apps run."""

__version__ = "0.1.0"
