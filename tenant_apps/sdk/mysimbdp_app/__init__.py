"""mysimbdp_app: the small helper library for tenant apps (mounted read-only in every sandbox at
/opt/mysimbdp/sdk and on PYTHONPATH).

* :mod:`.context` - what the platform hands an app (keyspace, credentials, input, output) from the environment;
* :mod:`.store`   - a Cassandra session with retries and a :class:`~.store.Writer` for bounded concurrent,
  prepared (and optionally per-partition batched) writes;
* :mod:`.records` - CSV reading that survives quoted commas/newlines, BOMs, Windows line ends and bad rows;
* :mod:`.batch`   - ``run_batch(...)``: the whole life of a batch app in one call;
* :mod:`.stream`  - ``run_stream(...)``: the whole life of a stream app instance in one call.

The contract itself is in tenant_apps/README.md; apps need not use this library.
"""

from .context import Context, TemporaryFailure
from .records import Rejected, Table

__all__ = ["Context", "Rejected", "Table", "TemporaryFailure"]
__version__ = "1.0"
