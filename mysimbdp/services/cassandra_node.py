"""The Cassandra node the platform runs itself (cassandra.managed = true).

Installed from Maven Central with the project's ``cassandra/pom.xml``; configured from
``cassandra/cassandra.yaml.in``; data, logs and the rendered configuration under
``$MYSIMBDP_HOME/cassandra``. At the first start the default superuser ``cassandra`` is replaced by an
operator role whose generated password is written only to ``$MYSIMBDP_HOME/secrets`` (mode 0600).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from cassandra.cluster import NoHostAvailable

from .. import credentials, db
from ..config import Config
from ..errors import CassandraUnavailable, ServiceStartError
from .process import Daemon, port_free, port_open, wait_until, who_listens

log = logging.getLogger(__name__)

MAIN_CLASS = "org.apache.cassandra.service.CassandraDaemon"
DEFAULT_LOGIN = db.Login("cassandra", "cassandra")


def daemon(cfg: Config) -> Daemon:
    return Daemon("cassandra", cfg.paths.run, cfg.paths.logs, match=MAIN_CLASS)


def _lib(cfg: Config) -> Path:
    return cfg.paths.cassandra / "lib"


def _recipe_hash(cfg: Config) -> str:
    pom = (cfg.source / "cassandra" / "pom.xml").read_bytes()  # bounded: the project's own file
    return hashlib.sha256(pom + cfg.cassandra.version.encode()).hexdigest()[:16]


def installed(cfg: Config) -> bool:
    return (_lib(cfg) / f".installed-{_recipe_hash(cfg)}").exists()


def install(cfg: Config) -> None:
    """Fetch cassandra-all and its dependencies with Maven, once per pom/version."""
    if installed(cfg):
        return
    mvn = shutil.which("mvn")
    if not mvn:
        raise ServiceStartError("Cassandra: Maven (mvn) is not installed", hint="install maven, then run `mysimbdp up`")
    lib = _lib(cfg)
    tmp = lib.with_name("lib.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    log.info("installing Cassandra %s from Maven Central (first time only)", cfg.cassandra.version)
    argv = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(cfg.source / "cassandra" / "pom.xml"),
        "dependency:copy-dependencies",
        f"-Dcassandra.version={cfg.cassandra.version}",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={tmp}",
    ]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0 or not any(tmp.glob("cassandra-all-*.jar")):
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
        raise ServiceStartError("Cassandra: downloading cassandra-all with Maven failed: " + " | ".join(tail))
    shutil.rmtree(lib, ignore_errors=True)
    tmp.rename(lib)
    (lib / f".installed-{_recipe_hash(cfg)}").touch()


def java_command() -> str:
    java = shutil.which("java")
    if not java:
        raise ServiceStartError(
            "Cassandra: Java is missing", hint="install a Java 17 runtime (openjdk-17-jre-headless)"
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    m = re.search(r'version "(\d+)', out)
    major = int(m.group(1)) if m else 0
    if major not in (11, 17):
        raise ServiceStartError(f"Cassandra: Java {major or '?'} found at {java}; Cassandra 5.0 needs Java 11 or 17")
    return java


def render_config(cfg: Config) -> Path:
    home = cfg.paths.cassandra
    conf = home / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    for sub in ("data", "commitlog", "hints", "saved_caches", "cdc_raw"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    text = (
        (cfg.source / "cassandra" / "cassandra.yaml.in")  # bounded: the project's own template
        .read_text()
        .format(home=home, port=cfg.cassandra.port, storage_port=cfg.cassandra.storage_port)
    )
    target = conf / "cassandra.yaml"
    target.write_text(text)
    return target


def command(cfg: Config, java: str) -> list[str]:
    lib = _lib(cfg)
    jamm = sorted(lib.glob("jamm-*.jar"))
    if not jamm:
        raise ServiceStartError("Cassandra: the jamm agent jar is missing from the installed lib/")
    options = [
        line.strip()
        for line in (cfg.source / "cassandra" / "jvm17-server.options").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    yaml = render_config(cfg)
    return [
        java,
        f"-Xms{cfg.cassandra.heap}",
        f"-Xmx{cfg.cassandra.heap}",
        *options,
        f"-javaagent:{jamm[0]}",
        f"-Dcassandra.config={yaml.as_uri()}",
        f"-Dcassandra.storagedir={cfg.paths.cassandra}",
        f"-Dcassandra.logdir={cfg.paths.logs}",
        f"-Dlogback.configurationFile={(cfg.source / 'cassandra' / 'logback.xml').as_uri()}",
        "-Dcassandra-foreground=yes",
        "-cp",
        f"{lib}/*",
        MAIN_CLASS,
    ]


def memory_cap(cfg: Config) -> int:
    """Bytes Cassandra may use: the configured cap, or twice its heap plus 1 GiB (off-heap buffers, metaspace,
    thread stacks)."""
    if cfg.supervisor.cassandra_memory_mb:
        return cfg.supervisor.cassandra_memory_mb << 20
    heap = cfg.cassandra.heap.lower()
    units = {"k": 10, "m": 20, "g": 30}
    return (int(heap[:-1]) << units[heap[-1]]) * 2 + (1 << 30)


def _can_login(cfg: Config, login: db.Login) -> bool | None:
    """True: logged in. False: reached but the login was refused. None: not reachable yet."""
    cluster = db.cluster_for(cfg, login, hosts=("127.0.0.1",))
    try:
        cluster.connect().execute("SELECT release_version FROM system.local")
        return True
    except NoHostAvailable as exc:
        return False if db.login_refused(exc) else None
    except Exception:  # noqa: BLE001 - still starting: treat any driver error as "not yet"
        return None
    finally:
        cluster.shutdown()


def start(cfg: Config, timeout: float = 240.0) -> str:
    """Install if needed, start if not running, and wait until the operator can log in."""
    d = daemon(cfg)
    if d.running():
        bootstrap_operator(cfg, timeout)
        return "running"
    java = java_command()
    for host, port in (("127.0.0.1", cfg.cassandra.port), ("127.0.0.1", cfg.cassandra.storage_port)):
        if not port_free(host, port):
            raise ServiceStartError(
                f"Cassandra: port {port} is already taken by {who_listens(port)}",
                hint=f"stop it or set MYSIMBDP_CASSANDRA_{'PORT' if port == cfg.cassandra.port else 'STORAGE_PORT'}",
            )
    install(cfg)
    d.start(
        command(cfg, java),
        cwd=cfg.paths.cassandra,
        memory=memory_cap(cfg),
        java=True,
        oom_score_adj=-500,
        stop_timeout=60,
        nofile=100_000,  # tenants' connections and tables cost files; 20,000 proved reachable
    )
    t0 = time.monotonic()
    if not wait_until(lambda: port_open("127.0.0.1", cfg.cassandra.port), timeout, 0.5, abort=d.exited_early):
        if d.exited_early():
            raise ServiceStartError("Cassandra exited while starting:\n" + d.log_tail())
        raise ServiceStartError(
            f"Cassandra did not open port {cfg.cassandra.port} within {timeout:.0f}s:\n" + d.log_tail()
        )
    remaining = max(30.0, timeout - (time.monotonic() - t0))
    bootstrap_operator(cfg, remaining)
    return "started"


def operator_ready(cfg: Config) -> bool:
    try:
        login = db.operator_login(cfg)
    except CassandraUnavailable:
        return False
    return _can_login(cfg, login) is True


def bootstrap_operator(cfg: Config, timeout: float) -> None:
    """Make sure the operator role exists and the default superuser is gone."""
    secret = db.operator_secret_path(cfg)
    deadline = time.monotonic() + timeout
    while True:
        if secret.exists() and _can_login(cfg, db.operator_login(cfg)) is True:
            break
        state = _can_login(cfg, DEFAULT_LOGIN)
        if state is True:
            _replace_default_superuser(cfg)
            continue
        if time.monotonic() > deadline:
            raise ServiceStartError(
                "Cassandra is up but neither the operator nor the default superuser can log in",
                hint=f"check {secret} and {cfg.paths.logs / 'cassandra-system.log'}",
            )
        time.sleep(0.5)
    # the operator works: the default superuser must not
    if _can_login(cfg, DEFAULT_LOGIN) is True:
        _replace_default_superuser(cfg)


def _replace_default_superuser(cfg: Config) -> None:
    secret = db.operator_secret_path(cfg)
    fresh = not secret.exists()
    if fresh:
        login = db.Login(cfg.cassandra.username, credentials.generate_password())
        credentials.write_secret(secret, {"username": login.username, "password": login.password})
    else:
        login = db.operator_login(cfg)
    session = db.connect(cfg, DEFAULT_LOGIN)
    try:
        db.ensure_role(session, login.username, login.password, superuser=True, password_changed=fresh)
    finally:
        session.cluster.shutdown()
    session = db.connect(cfg, login)
    try:
        session.execute("DROP ROLE IF EXISTS cassandra")
    finally:
        session.cluster.shutdown()
    log.info("replaced the default superuser with role %s", login.username)


def stop(cfg: Config) -> bool:
    return daemon(cfg).stop(timeout=60)


def status(cfg: Config) -> dict:
    d = daemon(cfg)
    if not cfg.cassandra.managed:
        ok = operator_ready(cfg)
        out = {"managed": False, "running": ok, "ready": ok, "contact_points": list(cfg.cassandra.contact_points)}
        return out | (cluster_nodes(cfg) if ok else {})
    pid = d.pid()
    ready = pid is not None and operator_ready(cfg)
    out = {
        "managed": True,
        "running": pid is not None,
        "pid": pid,
        "ready": ready,
        "port": cfg.cassandra.port,
        "version": cfg.cassandra.version,
        "log": str(d.log_file),
    }
    return out | (cluster_nodes(cfg) if ready else {})


def cluster_nodes(cfg: Config) -> dict:
    """Each node of the cluster as the operator's session sees it, as ``nodetool status`` shows it: its
    address, up or down (the driver's view) and gossip state (``UN``: up and normal), load, the share of the
    token ring it owns, and whether all nodes agree on the schema. Read from ``system_views.gossip_info`` and
    the token columns of ``system.local`` / ``system.peers_v2``: no JMX needed. ``{}`` when unreachable."""
    try:
        session = db.connect(cfg)
    except CassandraUnavailable:
        return {}
    try:
        gossip = session.execute("SELECT * FROM system_views.gossip_info", timeout=10).all()
        tokens = {str(r.broadcast_address): r.tokens for r in session.execute("SELECT broadcast_address, tokens FROM system.local")}
        for r in session.execute("SELECT peer, tokens FROM system.peers_v2", timeout=10):
            tokens[str(r.peer)] = r.tokens
        up = {str(h.address): bool(h.is_up) for h in session.cluster.metadata.all_hosts()}
    except Exception as exc:  # noqa: BLE001 - a status must answer: what could not be read is said
        return {"nodes_error": f"{type(exc).__name__}: {exc}"[:200]}
    finally:
        session.cluster.shutdown()
    owns = _ownership(tokens)
    nodes = []
    for g in sorted(gossip, key=lambda r: r.address):
        state = (g.status or "?").split(",")[0]
        rpc = (g.native_address_and_port or g.rpc_address or "").split(":")[0]
        is_up = up.get(rpc, up.get(g.address))
        nodes.append(
            {
                "address": g.address,
                "cql": g.native_address_and_port or "",
                "state": ("U" if is_up else "D") + _STATE_LETTER.get(state, "?"),
                "load_mib": round(float(g.load) / 2**20, 1) if g.load else None,
                "owns_pct": round(owns.get(g.address, 0.0) * 100, 1),
            }
        )
    return {"nodes": nodes, "schema_agreement": len({g.schema for g in gossip}) <= 1}


_STATE_LETTER = {"NORMAL": "N", "BOOT": "J", "BOOT_REPLACE": "J", "LEAVING": "L", "LEFT": "L", "MOVING": "M"}


def _ownership(tokens: dict[str, object]) -> dict[str, float]:
    """The share of the Murmur3 token ring each node's tokens own (a token owns the range up to it from the
    token before it), as ``nodetool status`` without a keyspace reports it."""
    ring = sorted((int(t), node) for node, ts in tokens.items() for t in (ts or ()))
    if not ring:
        return {}
    size = 2**64
    share: dict[str, float] = {}
    for i, (token, node) in enumerate(ring):
        before = ring[i - 1][0] if i else ring[-1][0] - size
        share[node] = share.get(node, 0.0) + (token - before) / size
    return share


# --- nodetool (snapshots and imports for backups) ----------------------------------------------------------
#
# The node is started without JMX. The first backup or restore opens it on the running JVM with jcmd (the
# JDK's ManagementAgent.start: no restart needed), on 127.0.0.1 only, with a login generated into the state
# folder; it stays open until the node stops. nodetool is the Cassandra jar's own NodeTool class.

JMX_USER = "mysimbdp_jmx"
NODETOOL_CLASS = "org.apache.cassandra.tools.NodeTool"


def _jmx_login(cfg: Config) -> db.Login:
    """nodetool's JMX login, generated once into the state folder."""
    path = cfg.paths.secrets / "cassandra-jmx.json"
    if not path.exists():
        credentials.write_secret(path, {"username": JMX_USER, "password": credentials.generate_password()})
    data = credentials.read_secret_json(path)
    return db.Login(data["username"], data["password"])


def _jmx_client_file(cfg: Config) -> Path:
    """nodetool's -pwf file ("user password", 0600): apart from the node's own password file, which the JVM
    rewrites with hashes the first time it reads it."""
    login = _jmx_login(cfg)
    path = cfg.paths.secrets / "cassandra-jmx.nodetool"
    credentials.write_secret(path, f"{login.username} {login.password}\n")
    return path


def ensure_jmx(cfg: Config) -> None:
    """Make sure the managed node answers JMX on 127.0.0.1:``cassandra.jmx_port``, opening it if needed."""
    if not cfg.cassandra.managed:
        raise ServiceStartError(
            "nodetool needs the node the platform runs (cassandra.managed = true)",
            hint="back up an existing cluster with its own tools",
        )
    port = cfg.cassandra.jmx_port
    if port_open("127.0.0.1", port):
        return
    pid = daemon(cfg).pid()
    if pid is None:
        raise CassandraUnavailable("Cassandra is not running", hint="run `mysimbdp up`")
    login = _jmx_login(cfg)
    password = cfg.paths.secrets / "cassandra-jmx.password"  # the node's: it replaces the password by a hash
    access = cfg.paths.secrets / "cassandra-jmx.access"
    credentials.write_secret(password, f"{login.username} {login.password}\n")
    credentials.write_secret(access, f"{login.username} readwrite\n")
    jcmd = _jdk_tool(pid, "jcmd")
    argv = [
        jcmd,
        str(pid),
        "ManagementAgent.start",
        "jmxremote.host=127.0.0.1",
        f"jmxremote.port={port}",
        f"jmxremote.rmi.port={port}",
        "jmxremote.ssl=false",
        "jmxremote.registry.ssl=false",
        "jmxremote.authenticate=true",
        f"jmxremote.password.file={password}",
        f"jmxremote.access.file={access}",
        "jmxremote.autodiscovery=false",
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    # two commands at once: the second one's start fails, and the port is open all the same
    if not wait_until(lambda: port_open("127.0.0.1", port), 10, 0.2):
        detail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])
        raise ServiceStartError(f"could not open Cassandra's JMX port {port} with jcmd: {detail or 'no answer'}")
    log.info("opened Cassandra's JMX on 127.0.0.1:%d for nodetool", port)


def _jdk_tool(pid: int, tool: str) -> str:
    """``tool`` of the JDK the node runs on (jcmd must match the JVM it attaches to)."""
    try:
        candidate = Path(os.readlink(f"/proc/{pid}/exe")).with_name(tool)
    except OSError:
        candidate = None
    if candidate is not None and candidate.is_file():
        return str(candidate)
    found = shutil.which(tool)
    if not found:
        raise ServiceStartError(
            f"{tool} is missing: nodetool needs JMX, opened with the JDK's {tool}",
            hint="install openjdk-17-jdk-headless (scripts/setup.sh does)",
        )
    return found


def nodetool(cfg: Config, *args: str, timeout: float = 3600) -> str:
    """Run ``nodetool ARGS`` against the managed node; its output, or ServiceError with its last lines."""
    from ..errors import ServiceError

    ensure_jmx(cfg)
    password = _jmx_client_file(cfg)
    # the server's module exports and opens: Cassandra's classes need them in a client too
    modules = [
        line.strip()
        for line in (cfg.source / "cassandra" / "jvm17-server.options").read_text().splitlines()
        if line.strip().startswith("--add-")
    ]
    argv = [
        java_command(),
        *modules,
        "-Xms32m",
        "-Xmx256m",
        "-XX:+UseSerialGC",
        "-XX:TieredStopAtLevel=1",  # a short-lived client: start fast
        f"-Dlogback.configurationFile={(cfg.source / 'cassandra' / 'logback-tools.xml').as_uri()}",
        "-cp",
        f"{_lib(cfg)}/*",
        NODETOOL_CLASS,
        "-h",
        "127.0.0.1",
        "-p",
        str(cfg.cassandra.jmx_port),
        "-u",
        JMX_USER,
        "-pwf",
        str(password),
        *args,
    ]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ServiceError(f"nodetool {args[0]} did not finish within {timeout:.0f}s") from None
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).strip().splitlines() if ln.strip()]
        raise ServiceError(f"nodetool {' '.join(args)} failed: " + " | ".join(lines[-3:] or ["no output"]))
    return proc.stdout
