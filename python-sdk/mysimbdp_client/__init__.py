"""mysimbdp_client: the Python client of mysimbdp, a multi-tenant data platform on Apache Cassandra.

One :class:`Client` per tenant reaches the upload API (resumable batch uploads and their receipts), the
stream API and the broker (publishing with confirmations), and the query API (tables, exports, binary
objects). Every error is a :class:`errors.MysimbdpError`.
"""

from . import errors
from .client import Client
from .errors import (
    AuthenticationError,
    BadRequestError,
    MysimbdpError,
    NotFoundError,
    QuotaExceededError,
    TransportError,
    UnavailableError,
)
from .objects import ObjectInfo, ObjectReader
from .publisher import Checkpoint, Published, Publisher
from .tables import Export, Page, Table
from .uploads import Sent, Source

__version__ = "0.1.0"
__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "Checkpoint",
    "Client",
    "Export",
    "MysimbdpError",
    "NotFoundError",
    "ObjectInfo",
    "ObjectReader",
    "Page",
    "Published",
    "Publisher",
    "QuotaExceededError",
    "Sent",
    "Source",
    "Table",
    "TransportError",
    "UnavailableError",
    "errors",
]
