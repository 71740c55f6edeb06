"""The stream API (port 8802): the tenant's stream app instances, their reports and the scaling decisions."""

from __future__ import annotations

from urllib.parse import quote

from ._http import Http


class Stream:
    """``Client.stream``: start and stop the tenant's stream app instances and watch them. Starting and
    stopping wait (up to a couple of minutes) until the instances are as asked; ``settled`` in the answer
    says whether they got there in that time."""

    def __init__(self, http: Http) -> None:
        self.http = http

    def start(self, count: int = 1) -> dict:
        """Run ``count`` instances (more are added, or extra ones stopped gracefully)."""
        return self.http.call("POST", "/v1/instances", "starting the stream", json={"count": count}, timeout=300).json()

    def stop(self, instance: str | None = None) -> dict:
        """Stop one instance (``s0``...), or all of them: each finishes what it read first."""
        path = "/v1/instances" + (f"/{quote(instance, safe='')}" if instance else "")
        return self.http.call("DELETE", path, "stopping the stream", timeout=300).json()

    def status(self) -> dict:
        """The instances (desired and running), the backlog, the last reports."""
        return self.http.call("GET", "/v1/stream", "reading the stream's status").json()

    def reports(self, limit: int = 50) -> list[dict]:
        return self.http.call("GET", "/v1/reports", "reading reports", params={"limit": limit}).json()["reports"]

    def decisions(self, limit: int = 50) -> list[dict]:
        """The autoscaler's decisions, each with its reason."""
        return self.http.call("GET", "/v1/decisions", "reading decisions", params={"limit": limit}).json()["decisions"]
