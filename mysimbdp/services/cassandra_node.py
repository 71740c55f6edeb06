"""The Cassandra nodes the platform runs itself (cassandra.managed = true): one, or ``cassandra.nodes``.

Installed from Maven Central with the project's ``cassandra/pom.xml``; configured from
``cassandra/cassandra.yaml.in``; data, logs and the rendered configuration under
``$MYSIMBDP_HOME/cassandra`` (node 1) and ``$MYSIMBDP_HOME/cassandra/node<i>`` (the others). At the first
start the default superuser ``cassandra`` is replaced by an operator role whose generated password is
written only to ``$MYSIMBDP_HOME/secrets`` (mode 0600).

A cluster (docs/scale-out.md) runs its nodes as ccm does, on one machine, each on its own address of
``cassandra.node_network`` (added to the loopback interface) with the usual ports. They start one at a
time, each once the last is up and normal in gossip; the system keyspaces that must survive a node
(``system_auth`` above all: without it no one logs in) get three replicas, repaired once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cassandra.cluster import NoHostAvailable
from cassandra.query import ValueSequence

from .. import credentials, db, runtimes
from ..config import Config
from ..errors import CassandraUnavailable, ServiceStartError
from .process import Daemon, port_free, port_open, wait_until, who_listens

log = logging.getLogger(__name__)

MAIN_CLASS = "org.apache.cassandra.service.CassandraDaemon"
DEFAULT_LOGIN = db.Login("cassandra", "cassandra")


@dataclass(frozen=True)
class Node:
    index: int  # 1-based; node 1 is the seed
    address: str
    home: Path  # data, commitlog, hints, saved_caches, conf

    @property
    def name(self) -> str:  # its daemon's (pid file, log)
        return "cassandra" if self.index == 1 else f"cassandra-{self.index}"

    @property
    def yaml(self) -> Path:
        return self.home / "conf" / "cassandra.yaml"


def nodes(cfg: Config) -> list[Node]:
    """The managed nodes, node 1 first (node 1 keeps the single node's folders: one node can become three)."""
    return [
        Node(i, address, cfg.paths.cassandra if i == 1 else cfg.paths.cassandra / f"node{i}")
        for i, address in enumerate(cfg.node_addresses, 1)
    ]


def node(cfg: Config, index: int) -> Node:
    found = [n for n in nodes(cfg) if n.index == index]
    if not found:
        raise ServiceStartError(f"there is no node {index}: cassandra.nodes is {cfg.cassandra.nodes}")
    return found[0]


def daemon(cfg: Config, n: Node | None = None) -> Daemon:
    """A node's daemon (node 1's by default). A cluster's nodes are told apart by their configuration file."""
    n = n or nodes(cfg)[0]
    match = f"-Dcassandra.config={n.yaml.as_uri()}" if cfg.cluster else MAIN_CLASS
    return Daemon(n.name, cfg.paths.run, cfg.paths.logs, match=match)


def _logdir(cfg: Config, n: Node) -> Path:
    return cfg.paths.logs if n.index == 1 else cfg.paths.logs / n.name


def _lib(cfg: Config) -> Path:
    return Path(cfg.cassandra.lib) if cfg.cassandra.lib else cfg.paths.cassandra / "lib"


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


def render_config(cfg: Config, n: Node | None = None) -> Path:
    n = n or nodes(cfg)[0]
    home = n.home
    conf = home / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    for sub in ("data", "commitlog", "hints", "saved_caches", "cdc_raw"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    text = (
        (cfg.source / "cassandra" / "cassandra.yaml.in")  # bounded: the project's own template
        .read_text()
        .format(
            home=home,
            port=cfg.cassandra.port,
            storage_port=cfg.cassandra.storage_port,
            address=n.address,
            seed=cfg.node_addresses[0],
            alloc_rf=min(3, cfg.cassandra.nodes) if cfg.cluster else 1,
            auth_read="LOCAL_ONE" if cfg.cluster else "LOCAL_QUORUM",
        )
    )
    target = n.yaml
    target.write_text(text)
    return target


def heap(cfg: Config) -> str:
    """A node's heap: ``cassandra.heap``, but in a cluster at most a fifth of this machine's memory shared
    by its nodes (three 2 GiB heaps are more than a small machine can give)."""
    if not cfg.cluster:
        return cfg.cassandra.heap
    wanted = runtimes.megabytes(cfg.cassandra.heap) << 20
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return cfg.cassandra.heap
    share = max(512 << 20, total // 5 // cfg.cassandra.nodes)
    return f"{min(wanted, share) >> 20}M"


def _jvm_options(cfg: Config) -> list[str]:
    """The JVM options of Cassandra 5.0 on Java 17 (module exports and opens, GC), comments left out."""
    text = (cfg.source / "cassandra" / "jvm17-server.options").read_text()  # bounded: the project's own file
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def command(cfg: Config, java: str, n: Node | None = None) -> list[str]:
    n = n or nodes(cfg)[0]
    lib = _lib(cfg)
    jamm = sorted(lib.glob("jamm-*.jar"))
    if not jamm:
        raise ServiceStartError("Cassandra: the jamm agent jar is missing from the installed lib/")
    options = _jvm_options(cfg)
    yaml = render_config(cfg, n)
    size = heap(cfg)
    # a joining node waits ring_delay for gossip to settle (30 s by default); on one machine 5 s is plenty
    cluster = ["-Dcassandra.ring_delay_ms=5000"] if cfg.cluster else []
    return [
        java,
        f"-Xms{size}",
        f"-Xmx{size}",
        *options,
        *cluster,
        f"-javaagent:{jamm[0]}",
        f"-Dcassandra.config={yaml.as_uri()}",
        f"-Dcassandra.storagedir={n.home}",
        f"-Dcassandra.logdir={_logdir(cfg, n)}",
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
    return (runtimes.megabytes(heap(cfg)) << 20) * 2 + (1 << 30)


def _can_login(cfg: Config, login: db.Login, host: str | None = None) -> bool | None:
    """True: logged in (at ``host``, node 1 by default). False: reached but the login was refused. None: not
    reachable yet."""
    cluster = db.cluster_for(cfg, login, hosts=(host or cfg.node_addresses[0],))
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
    """Install if needed, start what is not running (a cluster's nodes one at a time, each once the one
    before is up and normal), and wait until the operator can log in."""
    if cfg.cluster:
        return _start_cluster(cfg, timeout)
    d = daemon(cfg)
    if d.running():
        bootstrap_operator(cfg, timeout)
        return "running"
    _start_node(cfg, nodes(cfg)[0], timeout)
    bootstrap_operator(cfg, max(30.0, timeout))
    return "started"


NOFILE = 100_000  # a node's open files: tenants' connections and tables cost files; 20,000 proved reachable


def _who(cfg: Config, n: Node) -> str:
    return "Cassandra" if not cfg.cluster else f"Cassandra node {n.index} ({n.address})"


def node_command(cfg: Config, n: Node) -> list[str]:
    """Node ``n``'s command line, its ports checked free, the jars installed and its configuration written:
    the same whether the supervisor runs it or a container (services/compose.py)."""
    java = java_command()
    for port in (cfg.cassandra.port, cfg.cassandra.storage_port):
        if not port_free(n.address, port):
            raise ServiceStartError(
                f"{_who(cfg, n)}: port {port} is already taken by {who_listens(port)}",
                hint=f"stop it or set MYSIMBDP_CASSANDRA_{'PORT' if port == cfg.cassandra.port else 'STORAGE_PORT'}",
            )
    install(cfg)
    _logdir(cfg, n).mkdir(parents=True, exist_ok=True)
    return command(cfg, java, n)


def _start_node(cfg: Config, n: Node, timeout: float) -> None:
    """Start one node and wait for its CQL port; ServiceStartError names the node and why it did not start."""
    who = _who(cfg, n)
    argv = node_command(cfg, n)
    d = daemon(cfg, n)
    d.start(
        argv,
        cwd=n.home,
        memory=memory_cap(cfg),
        java=True,
        oom_score_adj=-500,
        stop_timeout=60,
        nofile=NOFILE,
    )
    if not wait_until(lambda: port_open(n.address, cfg.cassandra.port), timeout, 0.5, abort=d.exited_early):
        why = d.log_tail()
        if d.exited_early():
            raise ServiceStartError(f"{who} exited while starting:\n" + why)
        raise ServiceStartError(f"{who} did not open port {cfg.cassandra.port} within {timeout:.0f}s:\n" + why)


def _start_cluster(cfg: Config, timeout: float) -> str:
    from ..sandbox import network

    network.ensure_node_addresses(cfg)
    if all(daemon(cfg, n).running() for n in nodes(cfg)) and _system_keyspaces_replicated(cfg):
        return "running"  # warm: one login proves the operator, and the system keyspaces are set
    started = []
    for n in nodes(cfg):
        if daemon(cfg, n).running():
            continue
        t0 = time.monotonic()
        _start_node(cfg, n, timeout)
        if n.index == 1:
            bootstrap_operator(cfg, max(30.0, timeout - (time.monotonic() - t0)))
        left = max(60.0, timeout - (time.monotonic() - t0))
        if not wait_until(lambda n=n: _gossip_state(cfg, n.address) == "NORMAL", left, 1.0):
            raise ServiceStartError(
                f"Cassandra node {n.index} ({n.address}) did not join the cluster within {left:.0f}s",
                hint=f"its log: {_logdir(cfg, n) / 'cassandra-system.log'}",
            )
        started.append(n.index)
    bootstrap_operator(cfg, timeout)
    _replicate_system_keyspaces(cfg)
    if not started:
        return "running"
    return f"started node{'s' if len(started) > 1 else ''} {', '.join(map(str, started))} of {cfg.cassandra.nodes}"


def _gossip_state(cfg: Config, address: str) -> str | None:
    """How the cluster (through the operator's session) sees the node at ``address``: NORMAL once joined."""
    return next((n["gossip"] for n in cluster_nodes(cfg).get("nodes", ()) if n["address"] == address), None)


#: keyspaces of Cassandra's own that a cluster must not lose with one node
SYSTEM_KEYSPACES = ("system_auth", "system_distributed", "system_traces")


def same_replication(have, want: dict[str, str]) -> bool:
    """Whether a keyspace's replication (as Cassandra lists it: the class by its full name) is ``want``."""
    have = dict(have or {})
    return have.pop("class", "").rsplit(".", 1)[-1] == want["class"] and have == {
        k: v for k, v in want.items() if k != "class"
    }


def _system_keyspaces_replicated(cfg: Config) -> bool:
    """Whether the operator logs in and the system keyspaces have the cluster's replication already."""
    try:
        session = db.connect(cfg)
    except CassandraUnavailable:
        return False
    try:
        rows = session.execute(
            "SELECT keyspace_name, replication FROM system_schema.keyspaces WHERE keyspace_name IN %s",
            (ValueSequence(SYSTEM_KEYSPACES),),
            timeout=10,
        ).all()
    except Exception:  # noqa: BLE001 - not ready: the slow path looks closer
        return False
    finally:
        session.cluster.shutdown()
    return len(rows) == len(SYSTEM_KEYSPACES) and all(
        same_replication(r.replication, cfg.replication_map()) for r in rows
    )


def _replicate_system_keyspaces(cfg: Config) -> None:
    """Give the system keyspaces the cluster's replication once (then a repair copies what node 1 held):
    with system_auth on one node, losing it would refuse every login."""
    replicate(cfg, only=SYSTEM_KEYSPACES)


#: replication strategies an operator sets (the others are Cassandra's own: local, virtual, everywhere)
_SETTABLE = ("SimpleStrategy", "NetworkTopologyStrategy")
_KEYSPACE_NAME = re.compile(r"[A-Za-z0-9_]{1,48}")


def replicate(cfg: Config, only: tuple[str, ...] | None = None, progress=None, dry_run: bool = False) -> list[str]:
    """Give every replicated keyspace (Cassandra's system_auth, system_distributed and system_traces, the
    platform's, each tenant's) the replication the configuration asks for, then copy what the nodes
    already hold to the new replicas with a full repair of each changed keyspace. This moves a one-node
    installation to a cluster (docs/scale-out.md: ``cassandra.nodes = 3``, ``mysimbdp up``, ``mysimbdp
    node replicate``); run again, it changes nothing. Returns the keyspaces changed (with ``dry_run``:
    those that would be); ``progress(line)`` hears each step."""
    want = cfg.replication_map()
    say = progress or (lambda line: log.info("%s", line))
    session = db.connect(cfg)
    try:
        changed = []
        for row in session.execute("SELECT keyspace_name, replication FROM system_schema.keyspaces", timeout=30):
            ks, strategy = row.keyspace_name, dict(row.replication or {}).get("class", "").rsplit(".", 1)[-1]
            if (
                (only is not None and ks not in only)
                or strategy not in _SETTABLE
                or same_replication(row.replication, want)
            ):
                continue
            if not _KEYSPACE_NAME.fullmatch(ks):  # a name Cassandra allows is always this; never quoted text
                raise ServiceStartError(f"keyspace {ks[:60]!r}: not a name this command alters")
            if dry_run:
                changed.append(ks)
                continue
            # ks: matched above; the replication map: validated configuration only
            session.execute(f'ALTER KEYSPACE "{ks}" WITH replication = {db.replication_cql(cfg)}', timeout=60)
            say(f"{ks}: replication {_replication_text(row.replication)} -> {_replication_text(want)}")
            changed.append(ks)
    finally:
        session.cluster.shutdown()
    if dry_run:
        return changed
    if changed and not cfg.cassandra.managed:
        say(
            "the nodes are not the platform's: run a full repair of these keyspaces on every node (nodetool repair -full)"
        )
        return changed
    # a node that replicates every range repairs them all; else each node its primary ranges (each range once)
    everything = int(want.get("datacenter1", want.get("replication_factor", "1"))) >= cfg.cassandra.nodes
    on = nodes(cfg)[:1] if everything else nodes(cfg)
    for ks in changed:  # nodetool repairs one keyspace at a time
        for n in on:
            nodetool(cfg, "repair", "-full", *(() if everything else ("-pr",)), "--", ks, timeout=3600, index=n.index)
        say(f"{ks}: repaired ({'all ranges on node 1' if everything else 'primary ranges on every node'})")
    return changed


def _replication_text(replication) -> str:
    r = dict(replication or {})
    strategy = r.pop("class", "").rsplit(".", 1)[-1]
    return f"{strategy} " + ", ".join(f"{k}:{v}" for k, v in sorted(r.items()))


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


# --- one node of a cluster (mysimbdp node ...) ---------------------------------------------------------------


def stop_node(cfg: Config, index: int) -> bool:
    """Stop node ``index`` (the supervisor does not start it again until asked); whether it was running."""
    return daemon(cfg, node(cfg, index)).stop(timeout=60)


def start_node(cfg: Config, index: int, timeout: float = 240.0) -> str:
    """Start node ``index`` if it is not running and wait until it is up and normal (its hints, kept by
    the others while it was away, are then replayed to it)."""
    n = node(cfg, index)
    if daemon(cfg, n).running():
        return "running"
    if cfg.cluster:
        from ..sandbox import network

        network.ensure_node_addresses(cfg)
    _start_node(cfg, n, timeout)
    if cfg.cluster and not wait_until(lambda: _gossip_state(cfg, n.address) == "NORMAL", timeout, 1.0):
        raise ServiceStartError(f"Cassandra node {index} ({n.address}) did not rejoin within {timeout:.0f}s")
    if not cfg.cluster:
        bootstrap_operator(cfg, timeout)
    return "started"


def repair(cfg: Config, index: int | None = None) -> list[int]:
    """A full repair of the platform's and the tenants' keyspaces on node ``index``, or on every node in
    turn; the nodes repaired."""
    done = []
    for n in nodes(cfg) if index is None else [node(cfg, index)]:
        nodetool(cfg, "repair", "-full", index=n.index, timeout=3600)
        done.append(n.index)
    return done


def stop(cfg: Config) -> bool:
    """Stop every node (the last first); whether any was running."""
    stopped = [daemon(cfg, n).stop(timeout=60) for n in reversed(nodes(cfg))]
    return any(stopped)


def status(cfg: Config) -> dict:
    d = daemon(cfg)
    if not cfg.cassandra.managed:
        ok = operator_ready(cfg)
        out = {"managed": False, "running": ok, "ready": ok, "contact_points": list(cfg.cassandra.contact_points)}
        return out | (_nodes_and_events(cfg) if ok else {})
    pid = d.pid()
    pids = [daemon(cfg, n).pid() for n in nodes(cfg)]
    ready = pid is not None and all(p is not None for p in pids) and operator_ready(cfg)
    out = {
        "managed": True,
        "running": pid is not None,
        "pid": pid,
        "ready": ready,
        "port": cfg.cassandra.port,
        "version": cfg.cassandra.version,
        "log": str(d.log_file),
    }
    if cfg.cluster:
        out["node_pids"] = pids
    return out | (_nodes_and_events(cfg) if pid is not None and operator_ready(cfg) else {})


def _nodes_and_events(cfg: Config) -> dict:
    """cluster_nodes, and the latest up/down events the node watch recorded (nodewatch.py)."""
    from .. import nodewatch

    try:
        session = db.connect(cfg)
    except CassandraUnavailable:
        return {}
    try:
        out = cluster_nodes(cfg, session)
        try:
            out["node_events"] = nodewatch.recent(cfg, session, limit=5)
        except Exception:  # noqa: BLE001 - no platform keyspace yet: no events to show
            pass
        return out
    finally:
        session.cluster.shutdown()


def cluster_nodes(cfg: Config, session=None) -> dict:
    """Each node of the cluster as the operator's session sees it, as ``nodetool status`` shows it: its
    address, up or down (the driver's view) and gossip state (``UN``: up and normal), load, the share of the
    token ring it owns, and whether all nodes agree on the schema. Read from ``system_views.gossip_info`` and
    the token columns of ``system.local`` / ``system.peers_v2``: no JMX needed. ``{}`` when unreachable.
    With ``session`` (a long-lived one: its up/down view follows Cassandra's events), that one is used."""
    own = session is None
    if own:
        try:
            session = db.connect(cfg)
        except CassandraUnavailable:
            return {}
    try:
        gossip = session.execute("SELECT * FROM system_views.gossip_info", timeout=10).all()
        meta = session.cluster.metadata
        # the driver's token map: every node's tokens as one connection read them (a system.local on one
        # node and a system.peers_v2 on another would leave a node out)
        tokens: dict[str, list] = {}
        for token, host in meta.token_map.token_to_host_owner.items() if meta.token_map else ():
            tokens.setdefault(str(host.broadcast_address or host.address), []).append(token.value)
        up = {str(h.address): bool(h.is_up) for h in meta.all_hosts()}
    except Exception as exc:  # noqa: BLE001 - a status must answer: what could not be read is said
        return {"nodes_error": f"{type(exc).__name__}: {exc}"[:200]}
    finally:
        if own:
            session.cluster.shutdown()
    owns = _ownership(tokens)
    nodes = []
    for g in sorted(gossip, key=lambda r: r.address):
        state = _gossip_status(g)
        rpc = (g.native_address_and_port or g.rpc_address or "").split(":")[0]
        is_up = up.get(rpc, up.get(g.address))
        nodes.append(
            {
                "address": g.address,
                "cql": g.native_address_and_port or "",
                "state": ("U" if is_up else "D") + _STATE_LETTER.get(state, "?"),
                "gossip": state,
                "load_mib": round(float(g.load) / 2**20, 1) if g.load else None,
                "owns_pct": round(owns.get(g.address, 0.0) * 100, 1),
            }
        )
    return {"nodes": nodes, "schema_agreement": len({g.schema for g in gossip}) <= 1}


def _gossip_status(row) -> str:
    """A node's gossip state (NORMAL, BOOT, LEAVING, ...): nodes speaking the newer messaging version fill
    only ``status_with_port``, older ones only ``status``."""
    value = getattr(row, "status_with_port", None) or getattr(row, "status", None) or "?"
    return value.split(",")[0]


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


def _jmx_port(cfg: Config, index: int) -> int:
    return cfg.cassandra.jmx_port + index - 1  # node i: the next port after node i-1's


def ensure_jmx(cfg: Config, index: int = 1) -> None:
    """Make sure managed node ``index`` answers JMX on 127.0.0.1:``cassandra.jmx_port`` (+ index - 1),
    opening it if needed."""
    if not cfg.cassandra.managed:
        raise ServiceStartError(
            "nodetool needs the node the platform runs (cassandra.managed = true)",
            hint="back up an existing cluster with its own tools",
        )
    port = _jmx_port(cfg, index)
    if port_open("127.0.0.1", port):
        return
    pid = daemon(cfg, node(cfg, index)).pid()
    if pid is None:
        what = "Cassandra is" if index == 1 and not cfg.cluster else f"Cassandra node {index} is"
        raise CassandraUnavailable(f"{what} not running", hint="run `mysimbdp up`")
    jcmd = _jdk_tool(pid, "jcmd")
    argv = [jcmd, str(pid), "ManagementAgent.start", *_jmx_settings(cfg, index)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    # two commands at once: the second one's start fails, and the port is open all the same
    if not wait_until(lambda: port_open("127.0.0.1", port), 10, 0.2):
        detail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])
        raise ServiceStartError(f"could not open Cassandra's JMX port {port} with jcmd: {detail or 'no answer'}")
    log.info("opened Cassandra's JMX on 127.0.0.1:%d for nodetool", port)


def _jmx_settings(cfg: Config, index: int) -> list[str]:
    """The JMX agent's settings for node ``index`` (its password and access files written): on 127.0.0.1
    only, with the generated login."""
    login = _jmx_login(cfg)
    password = cfg.paths.secrets / "cassandra-jmx.password"  # the node's: it replaces the password by a hash
    access = cfg.paths.secrets / "cassandra-jmx.access"
    credentials.write_secret(password, f"{login.username} {login.password}\n")
    credentials.write_secret(access, f"{login.username} readwrite\n")
    port = _jmx_port(cfg, index)
    return [
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


def jmx_at_start(cfg: Config, index: int) -> list[str]:
    """The same settings as JVM options, for a node that must have JMX open from its start: in a container
    (services/compose.py), where jcmd cannot attach to it from another container."""
    return [f"-Dcom.sun.management.{setting}" for setting in _jmx_settings(cfg, index)]


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


def nodetool(cfg: Config, *args: str, timeout: float = 3600, index: int = 1) -> str:
    """Run ``nodetool ARGS`` against managed node ``index``; its output, or ServiceError with its last lines."""
    from ..errors import ServiceError

    ensure_jmx(cfg, index)
    password = _jmx_client_file(cfg)
    # the server's module exports and opens: Cassandra's classes need them in a client too
    modules = [option for option in _jvm_options(cfg) if option.startswith("--add-")]
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
        str(_jmx_port(cfg, index)),
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
