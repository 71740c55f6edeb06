"""The client: one tenant's view of the whole platform, from one object.

    from mysimbdp_client import Client
    c = Client("airline", "s3cret-pass")
    c.upload("flights.csv")                      # batch: resumable upload, then c.wait_job(...)
    c.publish("stream.csv")                      # stream: counted once safe in Cassandra
    for row in c.table("flights").find({"origin": "JFK", "year": 2013, "month": 1, "day": 1}): ...
    c.objects.put("photos/a.jpg", Path("a.jpg"))

Addresses come from the arguments, else ``$MYSIMBDP_BATCH_URL``, ``$MYSIMBDP_STREAM_URL``,
``$MYSIMBDP_QUERY_URL`` and ``$MYSIMBDP_BROKER`` (HOST:PORT), else this machine's default ports.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from ._http import Http
from .errors import BadRequestError
from .objects import Objects
from .publisher import Checkpoint, Published, Publisher, batch_topic, file_digest, file_records
from .stream import Stream
from .tables import Table
from .uploads import Progress, Sent, Source, Uploads

DEFAULT_BATCH_URL = "http://127.0.0.1:8801"
DEFAULT_STREAM_URL = "http://127.0.0.1:8802"
DEFAULT_QUERY_URL = "http://127.0.0.1:8803"
DEFAULT_BROKER = "127.0.0.1:1883"


def broker_address(text: str) -> tuple[str, int]:
    """HOST:PORT (an IPv6 address in brackets) -> (host, port); ValueError when it is not that."""
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"a broker address is HOST:PORT, for example 127.0.0.1:1883, not {text!r}")
    return host, int(port)


class Client:
    """A tenant's client of the platform's APIs (uploads, stream, query) and its MQTT broker."""

    def __init__(
        self,
        user: str,
        password: str,
        *,
        batch_url: str | None = None,
        stream_url: str | None = None,
        query_url: str | None = None,
        broker: tuple[str, int] | str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.user = user
        self._password = password
        auth = (user, password)
        self.batch_url = batch_url or os.environ.get("MYSIMBDP_BATCH_URL") or DEFAULT_BATCH_URL
        self.stream_url = stream_url or os.environ.get("MYSIMBDP_STREAM_URL") or DEFAULT_STREAM_URL
        self.query_url = query_url or os.environ.get("MYSIMBDP_QUERY_URL") or DEFAULT_QUERY_URL
        broker = broker or os.environ.get("MYSIMBDP_BROKER") or DEFAULT_BROKER
        self.broker = broker_address(broker) if isinstance(broker, str) else broker
        self.uploads = Uploads(Http(self.batch_url, auth, timeout=timeout))
        self.stream = Stream(Http(self.stream_url, auth, timeout=timeout))
        self._query = Http(self.query_url, auth, timeout=timeout)
        self.objects = Objects(self._query)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for http in (self.uploads.http, self.stream.http, self._query):
            http.close()

    # --- batch ------------------------------------------------------------------------------------------
    def upload(self, path: str | os.PathLike | Source, progress: Progress | None = None, *, rate: int | None = None) -> Sent:
        """Send a file for batch ingestion (resuming an interrupted upload of the same content); the receipt
        to wait for is ``wait_job(sent.job_id)``. The server checks the tenant's constraints."""
        return self.uploads.upload(path if isinstance(path, Source) else Path(path), progress, rate=rate)

    def jobs(self, limit: int = 100, status: str | None = None) -> list[dict]:
        return self.uploads.jobs(limit, status)

    def job(self, job_id: str) -> dict:
        return self.uploads.job(job_id)

    def wait_job(self, job_id: str, timeout: float = 300.0) -> dict:
        return self.uploads.wait_job(job_id, timeout)

    def rejects(self, job_id: str) -> str:
        return self.uploads.rejects(job_id)

    # --- stream -----------------------------------------------------------------------------------------
    def publisher(self, stream: str = "default", **kw) -> Publisher:
        """A connected :class:`Publisher` for one stream (for long-running producers; close it when done)."""
        host, port = self.broker
        return Publisher(host, port, self.user, self._password, stream=stream, **kw)

    def publish(
        self,
        records: str | os.PathLike | Iterable[str | bytes],
        stream: str = "default",
        *,
        skip_header: bool = True,
        qos: int = 1,
        batch: int = 200,
        linger_ms: float = 5.0,
        rate: float | None = None,
        max_outage: float = 60.0,
        checkpoint: str | os.PathLike | None = None,
    ) -> Published:
        """Publish records and wait until each is confirmed (safe in Cassandra) or given up; the counts.
        ``records`` is a CSV file (a path: its header skipped unless ``skip_header=False``; records found as
        the csv module finds them), or an iterable of records (each one record; a line end is dropped).
        With ``checkpoint`` (a path; files only) a run that gave up (GaveUp) can be run again and sends only
        the rest. Raises GaveUp when nothing is confirmed for ``max_outage`` seconds."""
        path = Path(records) if isinstance(records, (str, os.PathLike)) else None
        cp: Checkpoint | None = None
        if checkpoint is not None:
            if path is None:
                raise BadRequestError("a checkpoint is kept for a file only", code="usage")
            cp = Checkpoint(Path(checkpoint), path, batch_topic(self.user, stream), file_digest(path))
        first = cp.read() if cp is not None and cp.cp.exists() else 0
        host, port = self.broker
        pub = Publisher(host, port, self.user, self._password, stream=stream, qos=qos, max_outage=max_outage,
                        first_record=first)  # fmt: skip
        try:
            if path is not None:
                source: Iterable[tuple[int, bytes | None]] = file_records(path, skip_header, pub.max_payload)
            else:
                source = ((n + 1, _record(r)) for n, r in enumerate(records))  # type: ignore[arg-type]
            pub.publish(source, batch=batch, linger_ms=linger_ms, rate=rate, checkpoint=cp)
            pub.finish()
        except BaseException:
            pub.close()
            raise
        finally:
            if cp is not None:
                cp.write(pub.mark)
        result = pub.result()
        if cp is not None and result.all_confirmed and pub.mark == result.records_read:
            cp.remove()
        return result

    # --- query ------------------------------------------------------------------------------------------
    def tables(self) -> list[dict]:
        """The tenant's tables: name, columns, key, indexes."""
        return self._query.data("GET", "/v1/tables")["tables"]

    def table(self, name: str) -> Table:
        return Table(self._query, name)


def _record(r: str | bytes) -> bytes:
    return (r.encode() if isinstance(r, str) else r).rstrip(b"\r\n")
