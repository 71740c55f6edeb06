"""What the platform gives an app, read from the environment (see tenant_apps/README.md)."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_TEMPORARY = 75  # EX_TEMPFAIL: the platform retries the job later (Cassandra unreachable...)


class TemporaryFailure(Exception):
    """The infrastructure (Cassandra, the broker) is unavailable; the job should be retried later."""


def _env(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if value is None:
        raise SystemExit(f"mysimbdp_app: {name} is not set; is this running under mysimbdp?")
    return value


@dataclass(frozen=True)
class Context:
    tenant: str
    keyspace: str
    cassandra_hosts: tuple[str, ...]
    cassandra_port: int
    cassandra_username: str
    cassandra_password: str = field(repr=False)
    cassandra_consistency: str = "LOCAL_ONE"  # LOCAL_QUORUM on a cluster of three nodes
    # batch runs
    input_file: str | None = None
    file_name: str | None = None
    output_dir: str | None = None
    job_id: str | None = None
    jobs: tuple[dict, ...] = ()  # a run of several files: each one's job_id, input_file, file_name, output_dir
    # stream instances
    instance: str | None = None
    mqtt_host: str | None = None
    mqtt_port: int = 1883
    mqtt_username: str | None = None
    mqtt_password: str | None = field(default=None, repr=False)
    mqtt_client_id: str | None = field(default=None, repr=False)
    subscription: str | None = None
    report_topic: str | None = None
    report_interval: float = 5.0
    inbox_retention_hours: int = 48  # how long the platform keeps a chunk in the inbox

    @classmethod
    def from_env(cls) -> "Context":
        e = os.environ.get
        return cls(
            tenant=_env("MYSIMBDP_TENANT"),
            keyspace=_env("MYSIMBDP_KEYSPACE"),
            cassandra_hosts=tuple(_env("MYSIMBDP_CASSANDRA_HOSTS").split(",")),
            cassandra_port=int(_env("MYSIMBDP_CASSANDRA_PORT", "9042")),
            cassandra_username=_env("MYSIMBDP_CASSANDRA_USERNAME"),
            cassandra_password=_env("MYSIMBDP_CASSANDRA_PASSWORD"),
            cassandra_consistency=e("MYSIMBDP_CASSANDRA_CONSISTENCY") or "LOCAL_ONE",
            input_file=e("MYSIMBDP_INPUT_FILE"),
            file_name=e("MYSIMBDP_FILE_NAME"),
            output_dir=e("MYSIMBDP_OUTPUT_DIR"),
            job_id=e("MYSIMBDP_JOB_ID"),
            jobs=tuple(json.loads(e("MYSIMBDP_JOBS") or "[]")),
            instance=e("MYSIMBDP_INSTANCE"),
            mqtt_host=e("MYSIMBDP_MQTT_HOST"),
            mqtt_port=int(e("MYSIMBDP_MQTT_PORT", "1883")),
            mqtt_username=e("MYSIMBDP_MQTT_USERNAME"),
            mqtt_password=e("MYSIMBDP_MQTT_PASSWORD"),
            mqtt_client_id=e("MYSIMBDP_MQTT_CLIENT_ID"),
            subscription=e("MYSIMBDP_SUBSCRIPTION"),
            report_topic=e("MYSIMBDP_REPORT_TOPIC"),
            report_interval=float(e("MYSIMBDP_REPORT_INTERVAL", "5")),
            inbox_retention_hours=int(e("MYSIMBDP_INBOX_RETENTION_HOURS", "48")),
        )

    def for_job(self, job: dict) -> "Context":
        """This context for one file of a run of several."""
        return dataclasses.replace(
            self,
            input_file=job["input_file"],
            file_name=job["file_name"],
            output_dir=job["output_dir"],
            job_id=job["job_id"],
            jobs=(),
        )

    @property
    def rejects_path(self) -> str:
        return os.path.join(self.output_dir or "/output", "rejects.csv")

    @property
    def result_path(self) -> str:
        return os.path.join(self.output_dir or "/output", "result.json")

    def write_result(self, rows_ingested: int, rows_rejected: int, **extra) -> None:
        """The small JSON result the platform reads after the run (write it last)."""
        data = {"rows_ingested": int(rows_ingested), "rows_rejected": int(rows_rejected), **extra}
        tmp = self.result_path + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(data, fh)
        os.replace(tmp, self.result_path)
