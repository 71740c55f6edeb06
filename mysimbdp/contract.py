"""The tenant app contract, platform side: what one run of a tenant's app receives.

A batch run gets the one staged file read-only at /input, an output folder at /output (for result.json
and rejects.csv), its tenant's keyspace and Cassandra credentials, nothing else. A stream instance gets
its own broker credentials, the topic of its tenant's inbox notices and the topic for its reports. Both run
in the sandbox with the tenant's limits from its constraints, whatever the app's runtime (mysimbdp/runtimes.py:
the image and the command differ, nothing else). The tenant-facing side of the contract is
tenant_apps/README.md and the helper library tenant_apps/sdk/mysimbdp_app.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from . import broker, db, names, tenants
from .apps import App
from .config import Config
from .sandbox import Limits, Mount, RunSpec
from .tenants import Tenant


def _cassandra_env(cfg: Config, tenant: Tenant, login: db.Login | None = None) -> dict[str, str]:
    """The tenant's keyspace and role; a dry run (mysimbdp/dryrun.py) gives its scratch role as ``login``."""
    login = login or tenants.cassandra_login(cfg, tenant.name)
    return {
        "MYSIMBDP_TENANT": tenant.name,
        "MYSIMBDP_KEYSPACE": tenant.name,
        "MYSIMBDP_CASSANDRA_HOSTS": cfg.cassandra_sandbox_host,
        "MYSIMBDP_CASSANDRA_PORT": str(cfg.cassandra.port),
        # a cluster's writes are acknowledged by two of three replicas: any one node may be lost
        "MYSIMBDP_CASSANDRA_CONSISTENCY": "LOCAL_QUORUM" if cfg.cluster else "LOCAL_ONE",
        "MYSIMBDP_CASSANDRA_USERNAME": login.username,
        "MYSIMBDP_CASSANDRA_PASSWORD": login.password,
    }


def _cpus(asked: float) -> float:
    """What a tenant asks for, but never more CPUs than this machine has (Docker would refuse)."""
    return min(float(asked), float(os.cpu_count() or 1))


def batch_limits(cfg: Config, tenant: Tenant) -> Limits:
    b = tenant.constraints.batch
    return Limits(
        memory=f"{b['memory_mb']}m",
        cpus=_cpus(b["cpus"]),
        pids=cfg.sandbox.pids,
        scratch=cfg.sandbox.scratch,
        timeout=min(float(b["timeout_seconds"]), float(cfg.sandbox.timeout)),
        max_output_bytes=cfg.sandbox.max_output_mb << 20,
    )


@dataclass(frozen=True)
class BatchInput:
    """One staged file of a batch run, and the folder its results go to."""

    job_id: str
    input_file: Path
    file_name: str  # the name the tenant uploaded it under
    output_dir: Path


def batch_run(
    cfg: Config,
    tenant: Tenant,
    app: App,
    jobs: list[BatchInput],
    *,
    log_path: Path,
    limits: Limits | None = None,
    login: db.Login | None = None,
) -> RunSpec:
    """The sandboxed run of ``tenant``'s batch app over one staged file, or several.

    One file: ``/input/<stored name>`` and ``/output``, named by ``MYSIMBDP_INPUT_FILE`` and
    ``MYSIMBDP_OUTPUT_DIR``. Several (an app whose ``app.json`` says ``files_per_run`` > 1): each file at
    ``/input/<stored name>`` with its own ``/output/<job id>``, listed in ``MYSIMBDP_JOBS`` (JSON). Each file
    has its own result, and so its own receipt; the tenant's time limit holds for the whole run."""
    limits = limits or batch_limits(cfg, tenant)
    env = {**_cassandra_env(cfg, tenant, login), "MYSIMBDP_CPUS": str(limits.cpus)}
    mounts = [Mount(app.path, "/app")]
    listed = []
    for j in jobs:
        stored = names.safe_file_name(j.input_file.name)
        mounts.append(Mount(j.input_file, f"/input/{stored}"))
        out = "/output" if len(jobs) == 1 else f"/output/{j.job_id}"
        mounts.append(Mount(j.output_dir, out, read_only=False))
        listed.append(
            {"job_id": j.job_id, "input_file": f"/input/{stored}", "file_name": j.file_name, "output_dir": out}
        )
    if len(jobs) == 1:
        one = listed[0]
        env.update(
            MYSIMBDP_JOB_ID=one["job_id"],
            MYSIMBDP_INPUT_FILE=one["input_file"],
            MYSIMBDP_FILE_NAME=one["file_name"],
            MYSIMBDP_OUTPUT_DIR="/output",
        )
    else:  # the tenant's time limit holds for the run (a run that times out reruns its files alone)
        env["MYSIMBDP_JOBS"] = json.dumps(listed)
    first = jobs[0].job_id
    return RunSpec(
        name=f"mysimbdp-batch-{tenant.name}-{first[:13]}".lower(),
        tenant=tenant.name,
        kind="batch",
        command=app.command(limits),
        runtime=app.runtime,
        uid=tenant.uid,
        env=env,
        mounts=tuple(mounts),
        limits=limits,
        labels={"mysimbdp.job": first, "mysimbdp.jobs": ",".join(j.job_id for j in jobs), "mysimbdp.app": app.ref},
        output_dirs=tuple(j.output_dir for j in jobs),
        log_path=log_path,
    )


def stream_limits(cfg: Config, tenant: Tenant) -> Limits:
    s = tenant.constraints.stream
    return Limits(
        memory=f"{s['memory_mb']}m",
        cpus=_cpus(s["cpus"]),
        pids=cfg.sandbox.pids,
        scratch=cfg.sandbox.scratch,
        timeout=None,
    )


def stream_run(
    cfg: Config,
    tenant: Tenant,
    app: App,
    *,
    instance: str,
    mqtt_password: str,
    log_path: Path,
    login: db.Login | None = None,
) -> RunSpec:
    """A long-running instance of ``tenant``'s stream app."""
    env = {
        **_cassandra_env(cfg, tenant, login),
        "MYSIMBDP_INSTANCE": instance,
        "MYSIMBDP_MQTT_HOST": cfg.broker_sandbox_host,
        "MYSIMBDP_MQTT_PORT": str(cfg.broker.sandbox_port),
        "MYSIMBDP_MQTT_USERNAME": broker.instance_user(tenant.name, instance),
        "MYSIMBDP_MQTT_PASSWORD": mqtt_password,
        "MYSIMBDP_MQTT_CLIENT_ID": broker.session_client_id(f"mysimbdp-{tenant.name}-{instance}", mqtt_password),
        "MYSIMBDP_SUBSCRIPTION": broker.instance_filter(tenant.name),
        "MYSIMBDP_REPORT_TOPIC": broker.report_topic(tenant.name, instance),
        "MYSIMBDP_REPORT_INTERVAL": str(tenant.constraints.stream["report_interval_seconds"]),
        "MYSIMBDP_INBOX_RETENTION_HOURS": str(cfg.stream.inbox_retention_hours),
    }
    limits = stream_limits(cfg, tenant)
    return RunSpec(
        name=f"mysimbdp-stream-{tenant.name}-{instance}",
        tenant=tenant.name,
        kind="stream",
        command=app.command(limits),
        runtime=app.runtime,
        uid=tenant.uid,
        env=env,
        mounts=(Mount(app.path, "/app"),),
        limits=limits,
        labels={
            "mysimbdp.instance": instance,
            "mysimbdp.app": app.ref,
            "mysimbdp.log": str(log_path),
            "mysimbdp.down_signal": "SIGINT",
        },
        log_path=log_path,
    )
