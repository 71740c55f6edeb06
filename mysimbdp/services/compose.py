"""The platform in containers (``docker-compose.yml``): its image, built on this machine from the project's own
recipe with no registry, and what each of the Compose file's services runs.

Each service is one of the daemons ``mysimbdp up`` starts on the host (a Cassandra node, Mosquitto, an API
or a manager), run in the foreground with the same command line, configuration and state folder;
Compose restarts it when it dies (the supervisor's job on the host) and caps its memory. Every service
shares the host's network and process table, so node addresses, ports, pid files and the sandbox firewall
are exactly those of a platform started by ``mysimbdp up`` (``mysimbdp status``, ``node status`` and the
demo work unchanged), and the host's Docker engine (its socket mounted) runs the tenants' sandbox
containers. The state folder is mounted at its own path: the engine resolves a sandbox mount's source on
the host.

The image: a Debian root file system made by ``debootstrap`` with Java 17, Mosquitto, Python and the
platform's pinned Python packages (``platform_image_recipe.json``, built like the tenant runtime images,
sandbox/image.py), then a layer with the Cassandra jars and the platform's source (``docker build`` from
that local base image, nothing pulled).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pwd
import re
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from ..config import Config
from ..errors import CassandraUnavailable, RuntimeUnavailable, ServiceStartError, UsageError
from ..retry import retry

log = logging.getLogger(__name__)
RECIPE = Path(__file__).with_name("platform_image_recipe.json")
IMAGE = "mysimbdp/platform"
#: what of the checkout goes into the image (the rest: tests, benchmarks, docs, the state folder)
SOURCE_PARTS = (
    "mysimbdp",
    "batchingestmanager",
    "streamingestmanager",
    "queryapi",
    "dashboard",
    "fetchdata",
    "tenant_apps",
    "constraints",
    "mosquitto",
    "cassandra",
    "scripts",
    "pyproject.toml",
)
IMAGE_LIB = "/opt/mysimbdp/cassandra/lib"
IMAGE_SOURCE = "/opt/mysimbdp/platform"
ENV_FILE = ".env"  # beside docker-compose.yml: what Compose substitutes into it
HOME_LABEL = "mysimbdp.compose.home"  # on every container of docker-compose.yml: its state folder
INIT_BEAT = "compose-init.heartbeat"  # in run/: the sandbox's rules are in place (sandbox.firewall_heartbeat)
_PLAIN_PATH = re.compile(r"/[A-Za-z0-9_./-]{1,200}")  # a state folder Compose can mount without quoting


def services(cfg: Config) -> list[str]:
    """The names of the Compose file's long-running services, which ``run`` accepts."""
    from . import managers

    return (
        [f"cassandra-{i}" for i in range(1, cfg.cassandra.nodes + 1)] + ["mosquitto"] + [p.name for p in managers.PARTS]
    )


# --- the image ---------------------------------------------------------------------------------------


def build(cfg: Config, env_file: Path | None = None) -> str:
    """Build the platform's image (and the tenant runtime images the sandbox needs), tag it ``latest`` and
    write the Compose file's ``.env`` (or ``env_file``, for ``docker-compose --env-file``); return the tag."""
    from ..sandbox import image
    from ..sandbox.docker_runtime import client
    from . import cassandra_node

    if cfg.cassandra.nodes != 3 or not cfg.cassandra.managed:
        raise UsageError(
            "docker-compose.yml runs three Cassandra nodes of the platform's own",
            hint="set MYSIMBDP_CASSANDRA_NODES=3 (or cassandra.nodes = 3 in mysimbdp.toml) for this and every command",
        )
    if not _PLAIN_PATH.fullmatch(str(cfg.home)):
        raise UsageError(
            f"the state folder {cfg.home} has characters Compose cannot mount as they are",
            hint="set MYSIMBDP_HOME to a path of letters, digits and . _ - /",
        )
    from . import docker_engine

    docker_engine.start(cfg)  # the machine's engine, started as `mysimbdp up` would if nothing runs it
    c = client(timeout=600)
    base = image.recipe_tag(cfg, f"{IMAGE}-base", RECIPE)
    try:
        c.images.get(base)
    except Exception:  # noqa: BLE001 - docker's ImageNotFound, or any reason to build it
        image.build_from_recipe(
            cfg,
            c,
            json.loads(RECIPE.read_text()),  # bounded: the project's own recipe
            cfg.home / "image-platform",
            base,
            "the platform's base image",
            "minutes",
        )
    for rt in image.BUILT_AT_UP:  # the sandbox's images, which the containers cannot debootstrap
        image.ensure_image(cfg, c, rt)
    cassandra_node.install(cfg)  # the jars (Maven), copied into the image
    with tempfile.TemporaryDirectory(prefix="mysimbdp-image-") as tmp:
        context = Path(tmp)
        digest = _context(cfg, context, base)
        tag = f"{IMAGE}:{digest}"
        t0 = time.monotonic()
        print(f"building {tag} from {base} ...", flush=True)
        try:
            c.images.build(path=str(context), tag=tag, rm=True, forcerm=True, pull=False)
        except Exception as exc:  # noqa: BLE001 - docker's BuildError/APIError: one line for the operator
            raise RuntimeUnavailable(f"docker build of the platform image failed: {exc}") from None
        c.images.get(tag).tag(IMAGE, "latest")
        print(f"built {tag} in {time.monotonic() - t0:.0f}s", flush=True)
    write_env(cfg, tag, env_file or cfg.source / ENV_FILE)
    return tag


def _context(cfg: Config, context: Path, base: str) -> str:
    from . import cassandra_node

    platform = context / "platform"
    for part in SOURCE_PARTS:
        src = cfg.source / part
        if src.is_dir():
            shutil.copytree(src, platform / part, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "target"))
        elif src.is_file():
            platform.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, platform / part)
    shutil.copytree(cassandra_node._lib(cfg), context / "cassandra-lib")
    ids = _mosquitto_ids_here()
    # the image's iptables must write where the host's does (its nf_tables or its legacy tables)
    host_iptables = subprocess.run(["iptables", "-V"], capture_output=True, text=True).stdout
    legacy = "RUN update-alternatives --set iptables /usr/sbin/iptables-legacy\n" if "legacy" in host_iptables else ""
    # the broker's files are written by whichever process adds a tenant (a container or the host's CLI):
    # the image's mosquitto user gets the host's uid and gid, so both agree on who owns them
    usermod = f"RUN groupmod -o -g {ids[1]} mosquitto && usermod -o -u {ids[0]} -g {ids[1]} mosquitto\n" if ids else ""
    (context / "Dockerfile").write_text(
        f"FROM {base}\n"
        "ENV PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin PYTHONDONTWRITEBYTECODE=1 "
        f"PYTHONPATH={IMAGE_SOURCE} MYSIMBDP_CASSANDRA_LIB={IMAGE_LIB}\n"
        f"{usermod}{legacy}"
        f"COPY cassandra-lib {IMAGE_LIB}\n"
        f"COPY platform {IMAGE_SOURCE}\n"
        f"WORKDIR {IMAGE_SOURCE}\n"
        'ENTRYPOINT ["python3", "-m", "mysimbdp"]\n'
    )
    digest = hashlib.sha256()
    for f in sorted(p for p in context.rglob("*") if p.is_file()):
        digest.update(str(f.relative_to(context)).encode() + b"\0" + f.read_bytes())  # bounded: our own files
    return digest.hexdigest()[:12]


def _mosquitto_ids_here() -> tuple[int, int] | None:
    try:
        pw = pwd.getpwnam("mosquitto")
    except KeyError:
        return None
    return pw.pw_uid, pw.pw_gid


def write_env(cfg: Config, tag: str, target: Path) -> None:
    """``.env`` beside docker-compose.yml: the image, the state folder (mounted at its own path) and the node
    count, which Compose substitutes into the file. Their names are Compose's own: a variable of the shell
    wins over ``.env``, and a shell often has MYSIMBDP_HOME set for the CLI."""
    from . import cassandra_node

    sup = cfg.supervisor
    target.write_text(
        "# written by `mysimbdp compose build`\n"
        f"MYSIMBDP_COMPOSE_IMAGE={tag}\n"
        f"MYSIMBDP_COMPOSE_HOME={cfg.home}\n"
        f"MYSIMBDP_COMPOSE_NODES={cfg.cassandra.nodes}\n"
        "# the supervisor's memory caps (supervisor.*_memory_mb; a node's: twice its heap and 1 GiB)\n"
        f"MYSIMBDP_COMPOSE_CASSANDRA_MEMORY={cassandra_node.memory_cap(cfg) >> 20}m\n"
        f"MYSIMBDP_COMPOSE_BROKER_MEMORY={sup.broker_memory_mb}m\n"
        f"MYSIMBDP_COMPOSE_API_MEMORY={sup.api_memory_mb}m\n"
        f"MYSIMBDP_COMPOSE_MANAGER_MEMORY={sup.manager_memory_mb}m\n"
    )


def in_containers(cfg: Config) -> bool:
    """Whether this state folder's platform runs in containers: a container of docker-compose.yml labelled
    with this state folder is running (whatever state its daemons are in). Then Compose, not the
    supervisor, runs the daemons."""
    from . import docker_engine

    if not docker_engine.ping():
        return False
    from ..sandbox.docker_runtime import client

    try:
        found = client(timeout=10).containers.list(filters={"label": f"{HOME_LABEL}={cfg.home}"})
    except Exception:  # noqa: BLE001 - docker's errors: an engine going away is no platform in containers
        return False
    return bool(found)


# --- what each service runs --------------------------------------------------------------------------


def run(cfg: Config, service: str) -> None:
    """Become ``service``'s daemon (exec: Compose sees its exit status and restarts it), after writing its pid
    file where ``mysimbdp status`` looks."""
    from ..sandbox import network
    from . import cassandra_node, managers, mosquitto_broker

    if service not in services(cfg):
        raise UsageError(f"no service {service!r}; one of: {', '.join(services(cfg))}")
    env = dict(os.environ)
    if service.startswith("cassandra-"):
        n = cassandra_node.node(cfg, int(service.split("-")[1]))
        if cfg.cluster:
            network.ensure_node_addresses(cfg)
        argv, d, cwd = cassandra_node.node_command(cfg, n), cassandra_node.daemon(cfg, n), n.home
        argv[1:1] = cassandra_node.jmx_at_start(cfg, n.index)  # nodetool's (repairs, backups)
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]  # the container's
        wanted = cassandra_node.NOFILE if hard == resource.RLIM_INFINITY else min(cassandra_node.NOFILE, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    elif service == "mosquitto":
        argv, d, cwd = mosquitto_broker.command(cfg), mosquitto_broker.daemon(cfg), None
    else:
        part = next(p for p in managers.PARTS if p.name == service)
        argv, d, cwd, env = part.argv(), part.daemon(cfg), cfg.source, part.environment(cfg)
    d.run_dir.mkdir(parents=True, exist_ok=True)
    d.pid_file.write_text(f"{os.getpid()}\n")  # exec keeps the pid
    if cwd:
        os.chdir(cwd)
    log.info("%s: exec %s", service, argv[0])
    os.execve(argv[0], argv, env)


def init(cfg: Config, timeout: float = 600.0, watch: float = 0.0) -> None:
    """What ``mysimbdp up`` does between starting daemons: the operator's role, the system keyspaces
    replicated, the sandbox ready (image, network, firewall, a probe container) and the platform schema.

    With ``watch`` (seconds) it then stays, and every ``watch`` seconds puts the sandbox's firewall rules
    back if they went (a reboot, a flush of the host's rules): the managers that start tenant containers
    wait for its heartbeat, and Compose restarts it with the others."""
    from ..daemon import beat
    from ..sandbox import network, probe, runtime
    from . import cassandra_node, platform
    from .process import port_open, wait_until

    beat_file = cfg.paths.run / INIT_BEAT
    beat_file.unlink(missing_ok=True)
    first = cassandra_node.nodes(cfg)[0]
    if not wait_until(lambda: port_open(first.address, cfg.cassandra.port), timeout, 1.0):
        raise ServiceStartError(f"Cassandra node 1 ({first.address}) did not open its port within {timeout:.0f}s")

    def cassandra_ready() -> None:
        cassandra_node.bootstrap_operator(cfg, timeout)
        if cfg.cluster:
            for n in cassandra_node.nodes(cfg):
                if not wait_until(lambda n=n: cassandra_node._gossip_state(cfg, n.address) == "NORMAL", timeout, 2):
                    raise ServiceStartError(f"Cassandra node {n.index} ({n.address}) did not join in {timeout:.0f}s")
            cassandra_node._replicate_system_keyspaces(cfg)

    # a node that has just opened its port may still refuse a moment (as `up` waits for it, so does init)
    retry(cassandra_ready, on=(CassandraUnavailable,), initial=2.0, maximum=10.0, deadline=timeout, what="Cassandra")
    rt = runtime(cfg)
    rt.ensure_ready()  # images, network, firewall rules
    if not network.firewall_ok(cfg):
        raise ServiceStartError("the sandbox's firewall rules did not hold after they were set")
    beat(beat_file)  # before the probe: a container starts only after this beat (sandbox.firewall_heartbeat)
    probe.run_probe(rt)
    print("sandbox: ready", flush=True)
    schema = retry(lambda: platform._schema(cfg), on=(CassandraUnavailable,), initial=2.0, maximum=10.0, deadline=60)
    print("schema: " + schema, flush=True)
    while watch > 0:
        time.sleep(watch)
        if not network.firewall_ok(cfg):
            log.warning("the sandbox's firewall rules were gone: putting them back")
            network.ensure_network(cfg, rt.client)
        if network.firewall_ok(cfg):
            beat(beat_file)


def healthy(cfg: Config, service: str) -> bool:
    """Compose's health check of ``service``: a node's or the broker's port open, a manager's own check."""
    from ..daemon import heartbeat_age
    from . import cassandra_node, managers
    from .process import port_open

    if service == "init":
        age = heartbeat_age(cfg.paths.run / INIT_BEAT)
        return age is not None and age < 60
    if service not in services(cfg):
        raise UsageError(f"no service {service!r}; one of: {', '.join(['init', *services(cfg)])}")
    if service.startswith("cassandra-"):
        n = cassandra_node.node(cfg, int(service.split("-")[1]))
        return port_open(n.address, cfg.cassandra.port)
    if service == "mosquitto":
        return port_open(cfg.broker.host, cfg.broker.port)
    return next(p for p in managers.PARTS if p.name == service).healthy(cfg)
