"""The tenant app contract, platform side: what one run of a tenant's app receives.

A batch run gets the one staged file read-only at /input, an output folder at /output (for result.json
and rejects.csv), its tenant's keyspace and Cassandra credentials, nothing else. A stream instance gets
its own broker credentials, the shared subscription of its tenant and the topic for its reports. Both run
in the sandbox with the tenant's limits from its constraints. The tenant-facing side of the contract is
tenant_apps/README.md and the helper library tenant_apps/sdk/mysimbdp_app.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import broker, names, tenants
from .apps import App
from .config import Config
from .sandbox import Limits, Mount, RunSpec
from .tenants import Tenant


def _cassandra_env(cfg: Config, tenant: Tenant) -> dict[str, str]:
    login = tenants.cassandra_login(cfg, tenant.name)
    return {
        "MYSIMBDP_TENANT": tenant.name,
        "MYSIMBDP_KEYSPACE": tenant.name,
        "MYSIMBDP_CASSANDRA_HOSTS": cfg.cassandra_sandbox_host,
        "MYSIMBDP_CASSANDRA_PORT": str(cfg.cassandra.port),
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


def batch_run(
    cfg: Config,
    tenant: Tenant,
    app: App,
    *,
    input_file: Path,
    file_name: str,
    output_dir: Path,
    job_id: str,
    log_path: Path,
    limits: Limits | None = None,
) -> RunSpec:
    """The sandboxed run of ``tenant``'s batch app over one staged file."""
    stored = names.safe_file_name(input_file.name)
    env = {
        **_cassandra_env(cfg, tenant),
        "MYSIMBDP_JOB_ID": job_id,
        "MYSIMBDP_INPUT_FILE": f"/input/{stored}",
        "MYSIMBDP_FILE_NAME": file_name,
        "MYSIMBDP_OUTPUT_DIR": "/output",
        "MYSIMBDP_CPUS": str((limits or batch_limits(cfg, tenant)).cpus),
    }
    return RunSpec(
        name=f"mysimbdp-batch-{tenant.name}-{job_id[:13]}".lower(),
        tenant=tenant.name,
        kind="batch",
        command=app.command,
        uid=tenant.uid,
        env=env,
        mounts=(
            Mount(app.path, "/app"),
            Mount(input_file, f"/input/{stored}"),
            Mount(output_dir, "/output", read_only=False),
        ),
        limits=limits or batch_limits(cfg, tenant),
        labels={"mysimbdp.job": job_id, "mysimbdp.app": app.ref},
        output_dir=output_dir,
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


def stream_run(cfg: Config, tenant: Tenant, app: App, *, instance: str, mqtt_password: str, log_path: Path) -> RunSpec:
    """A long-running instance of ``tenant``'s stream app."""
    env = {
        **_cassandra_env(cfg, tenant),
        "MYSIMBDP_INSTANCE": instance,
        "MYSIMBDP_MQTT_HOST": cfg.broker_sandbox_host,
        "MYSIMBDP_MQTT_PORT": str(cfg.broker.sandbox_port),
        "MYSIMBDP_MQTT_USERNAME": broker.instance_user(tenant.name, instance),
        "MYSIMBDP_MQTT_PASSWORD": mqtt_password,
        "MYSIMBDP_MQTT_CLIENT_ID": broker.session_client_id(f"mysimbdp-{tenant.name}-{instance}", mqtt_password),
        "MYSIMBDP_SUBSCRIPTION": broker.shared_data_filter(tenant.name, tenants.stream_group(cfg, tenant.name)),
        "MYSIMBDP_REPORT_TOPIC": broker.report_topic(tenant.name, instance),
        "MYSIMBDP_REPORT_INTERVAL": str(tenant.constraints.stream["report_interval_seconds"]),
    }
    return RunSpec(
        name=f"mysimbdp-stream-{tenant.name}-{instance}",
        tenant=tenant.name,
        kind="stream",
        command=app.command,
        uid=tenant.uid,
        env=env,
        mounts=(Mount(app.path, "/app"),),
        limits=stream_limits(cfg, tenant),
        # on `mysimbdp down` an instance is paused (SIGINT): its session keeps its subscription
        labels={
            "mysimbdp.instance": instance,
            "mysimbdp.app": app.ref,
            "mysimbdp.log": str(log_path),
            "mysimbdp.down_signal": "SIGINT",
        },
        log_path=log_path,
    )
