"""The sandbox network: a Docker bridge whose containers reach Cassandra's and the broker's ports on the
host and nothing else.

Docker's ``--internal`` flag alone still lets a container reach every port of the host's bridge address,
so the rules that matter are ours:

* INPUT from the bridge (traffic to this host): accept the Cassandra and broker ports, reject the rest
  (the platform's HTTP APIs, SSH, other tenants' anything);
* DOCKER-USER from the bridge (traffic through this host): reject, so nothing leaves the machine and no
  other Docker network is reached;
* inter-container traffic on the bridge is off (``enable_icc=false``): one tenant's container cannot
  talk to another's.

The rules live in one chain per bridge, ``MYSIMBDP-<BRIDGE>``, rebuilt on every ``mysimbdp up``.
"""

from __future__ import annotations

import ipaddress
import logging
import shutil
import subprocess
from pathlib import Path

import docker
import docker.errors
from docker.types import IPAMConfig, IPAMPool

from ..config import Config
from ..errors import RuntimeUnavailable

log = logging.getLogger(__name__)


def chain(cfg: Config) -> str:
    return f"MYSIMBDP-{cfg.sandbox.bridge.upper()}"


def ensure_network(cfg: Config, client: docker.DockerClient) -> None:
    s = cfg.sandbox
    try:
        net = client.networks.get(s.network)
        ipam = (net.attrs.get("IPAM") or {}).get("Config") or [{}]
        opts = net.attrs.get("Options") or {}
        if ipam[0].get("Subnet") != s.subnet or opts.get("com.docker.network.bridge.name") != s.bridge:
            raise RuntimeUnavailable(
                f"Docker network {s.network} exists with another subnet or bridge",
                hint=f"remove it (docker network rm {s.network}) or change sandbox.network",
            )
    except docker.errors.NotFound:
        gateway = cfg.sandbox_gateway
        _check_subnet_free(s.subnet)
        client.networks.create(
            s.network,
            driver="bridge",
            internal=True,
            ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=s.subnet, gateway=gateway)]),
            options={
                "com.docker.network.bridge.name": s.bridge,
                "com.docker.network.bridge.enable_icc": "false",
                "com.docker.network.bridge.enable_ip_masquerade": "false",
            },
            labels={"mysimbdp": "sandbox"},
        )
        log.info("created sandbox network %s (%s on %s)", s.network, s.subnet, s.bridge)
    ensure_firewall(cfg)


def _check_subnet_free(subnet: str) -> None:
    want = ipaddress.ip_network(subnet)
    out = subprocess.run(["ip", "-4", "route", "show"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        dest = line.split()[0]
        if dest == "default":
            continue
        try:
            if ipaddress.ip_network(dest, strict=False).overlaps(want):
                raise RuntimeUnavailable(
                    f"sandbox.subnet {subnet} overlaps the route {dest} of this host",
                    hint="set MYSIMBDP_SANDBOX_SUBNET to a free private network",
                )
        except ValueError:
            continue


def _iptables(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    exe = shutil.which("iptables") or "/usr/sbin/iptables"
    proc = subprocess.run([exe, "-w", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeUnavailable(f"iptables {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


def firewall_rules(cfg: Config) -> list[list[str]]:
    """The rules of the MYSIMBDP-SANDBOX chain, in order."""
    ports = sorted({cfg.cassandra.port, cfg.broker.sandbox_port})
    rules = [["-p", "tcp", "--dport", str(p), "-j", "ACCEPT"] for p in ports]
    rules.append(["-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"])
    rules.append(["-j", "REJECT", "--reject-with", "icmp-port-unreachable"])
    return rules


def _chain(table: str, name: str, rules: list[list[str]], hook: str, *match: str) -> None:
    """Make chain ``name`` of ``table`` hold exactly ``rules``, and jump to it first from ``hook``."""
    t = ("-t", table)
    if _iptables(*t, "-n", "-L", name, check=False).returncode != 0:
        _iptables(*t, "-N", name)
    _iptables(*t, "-F", name)
    for rule in rules:
        _iptables(*t, "-A", name, *rule)
    if _iptables(*t, "-C", hook, *match, "-j", name, check=False).returncode != 0:
        _iptables(*t, "-I", hook, "1", *match, "-j", name)


def ensure_firewall(cfg: Config) -> None:
    bridge, name = cfg.sandbox.bridge, chain(cfg)
    _chain("filter", name, firewall_rules(cfg), "INPUT", "-i", bridge)
    if _iptables("-n", "-L", "DOCKER-USER", check=False).returncode != 0:
        _iptables("-N", "DOCKER-USER")
    forward = ["-i", bridge, "-j", "REJECT", "--reject-with", "icmp-port-unreachable"]
    if _iptables("-C", "DOCKER-USER", *forward, check=False).returncode != 0:
        _iptables("-I", "DOCKER-USER", "1", *forward)
    _forward_cassandra(cfg)
    # inserted last, so first on INPUT: before the sandbox chain, which accepts the broker's port
    _chain("filter", f"{name}-LIMITS", limit_rules(cfg), "INPUT")


def limit_rules(cfg: Config) -> list[list[str]]:
    """The rules of MYSIMBDP-<BRIDGE>-LIMITS, on every interface: from one address, at most 256 open
    connections to the broker, and 20 new ones a second (bursts of 200). Mosquitto 2.0 bounds neither, and
    checks a password per connection: without these, one address could use up its connections, or guess
    passwords as fast as the broker hashes them. (Cassandra bounds its own: 256 per address.)"""
    ports = ",".join(str(p) for p in sorted({cfg.broker.port, cfg.broker.sandbox_port}))
    new = "-p tcp -m multiport --dports {ports} --syn".format(ports=ports).split()
    reset = "-j REJECT --reject-with tcp-reset".split()
    too_many = "-m connlimit --connlimit-above 256 --connlimit-mask 32".split()
    too_fast = (
        "-m hashlimit --hashlimit-above 20/sec --hashlimit-burst 200 --hashlimit-mode srcip "
        f"--hashlimit-name {chain(cfg).lower()}-lim"
    ).split()
    return [new + too_many + reset, new + too_fast + reset]


def _forwards_cassandra(cfg: Config) -> bool:
    """Whether tenant containers reach the platform's own Cassandra through the gateway (its one node listens
    on loopback only); a managed cluster's node addresses, an existing cluster, or an explicit
    cassandra.sandbox_host, they reach directly."""
    return cfg.cassandra.managed and not cfg.cluster and not cfg.cassandra.sandbox_host


def nat_rules(cfg: Config) -> list[list[str]]:
    """The rules of the MYSIMBDP-<BRIDGE>-NAT chain: the gateway's Cassandra port to loopback."""
    port = str(cfg.cassandra.port)
    return [
        ["-d", cfg.sandbox_gateway, "-p", "tcp", "--dport", port, "-j", "DNAT", "--to-destination", f"127.0.0.1:{port}"]
    ]


def _route_localnet(cfg: Config) -> Path:
    return Path(f"/proc/sys/net/ipv4/conf/{cfg.sandbox.bridge}/route_localnet")


def _forward_cassandra(cfg: Config) -> None:
    if not _forwards_cassandra(cfg):
        return
    _chain("nat", f"{chain(cfg)}-NAT", nat_rules(cfg), "PREROUTING", "-i", cfg.sandbox.bridge)
    try:  # let packets from this bridge be forwarded to a loopback address (on this bridge only)
        _route_localnet(cfg).write_text("1")
    except OSError as exc:
        raise RuntimeUnavailable(f"cannot let the sandbox bridge reach Cassandra on loopback: {exc}") from None


def node_rules(cfg: Config) -> list[list[str]]:
    """The rules of MYSIMBDP-<BRIDGE>-NODES, for packets to a managed cluster's node addresses: from this
    host (loopback) anything, from the sandbox bridge the CQL port (the sandbox chain then decides as for
    any port), from anywhere else nothing."""
    return [
        ["-i", "lo", "-j", "RETURN"],
        ["-i", cfg.sandbox.bridge, "-p", "tcp", "--dport", str(cfg.cassandra.port), "-j", "RETURN"],
        ["-j", "DROP"],
    ]


def ensure_node_addresses(cfg: Config) -> None:
    """A managed cluster's node addresses on the loopback interface (the host reaches them, and the sandbox's
    containers through the bridge, both without translation), and the rules that keep everyone else out."""
    if not cfg.cluster:
        return
    ip = shutil.which("ip") or "/usr/sbin/ip"
    have = subprocess.run([ip, "-4", "-o", "addr", "show", "dev", "lo"], capture_output=True, text=True).stdout
    for address in cfg.node_addresses:
        if f" {address}/32 " not in have:
            proc = subprocess.run([ip, "addr", "add", f"{address}/32", "dev", "lo"], capture_output=True, text=True)
            if proc.returncode != 0 and "File exists" not in proc.stderr:
                raise RuntimeUnavailable(f"cannot add the node address {address} to lo: {proc.stderr.strip()}")
    _chain("filter", f"{chain(cfg)}-NODES", node_rules(cfg), "INPUT", "-d", cfg.cassandra.node_network)


def remove_node_addresses(cfg: Config) -> None:
    """Undo :func:`ensure_node_addresses`: the rules, then the addresses."""
    if not cfg.cluster:
        return
    name = f"{chain(cfg)}-NODES"
    jump = ["INPUT", "-d", cfg.cassandra.node_network, "-j", name]
    while _iptables("-C", *jump, check=False).returncode == 0:
        _iptables("-D", *jump, check=False)
    _iptables("-F", name, check=False)
    _iptables("-X", name, check=False)
    ip = shutil.which("ip") or "/usr/sbin/ip"
    for address in cfg.node_addresses:
        subprocess.run([ip, "addr", "del", f"{address}/32", "dev", "lo"], capture_output=True, text=True)


def firewall_ok(cfg: Config) -> bool:
    bridge, name = cfg.sandbox.bridge, chain(cfg)
    listed = _iptables("-S", name, check=False)
    if listed.returncode != 0:
        return False
    have = [line.split()[2:] for line in listed.stdout.splitlines() if line.startswith("-A ")]
    if _iptables("-C", "INPUT", "-j", f"{name}-LIMITS", check=False).returncode != 0 or any(
        _iptables("-C", f"{name}-LIMITS", *r, check=False).returncode != 0 for r in limit_rules(cfg)
    ):
        return False
    if _forwards_cassandra(cfg):
        nat = f"{name}-NAT"
        if _iptables("-t", "nat", "-C", "PREROUTING", "-i", bridge, "-j", nat, check=False).returncode != 0 or any(
            _iptables("-t", "nat", "-C", nat, *r, check=False).returncode != 0 for r in nat_rules(cfg)
        ):
            return False
        try:
            if _route_localnet(cfg).read_text().strip() != "1":  # bounded: a /proc/sys flag
                return False
        except OSError:
            return False
    return (
        len(have) == len(firewall_rules(cfg))
        and _iptables("-C", "INPUT", "-i", bridge, "-j", name, check=False).returncode == 0
        and _iptables(
            "-C", "DOCKER-USER", "-i", bridge, "-j", "REJECT", "--reject-with", "icmp-port-unreachable", check=False
        ).returncode
        == 0
    )


def remove(cfg: Config, client: docker.DockerClient) -> None:
    """Remove the sandbox network and its firewall rules (used by tests of other sandboxes)."""
    bridge, name = cfg.sandbox.bridge, chain(cfg)
    while _iptables("-D", "INPUT", "-i", bridge, "-j", name, check=False).returncode == 0:
        pass
    while (
        _iptables(
            "-D", "DOCKER-USER", "-i", bridge, "-j", "REJECT", "--reject-with", "icmp-port-unreachable", check=False
        ).returncode
        == 0
    ):
        pass
    _iptables("-F", name, check=False)
    _iptables("-X", name, check=False)
    while _iptables("-D", "INPUT", "-j", f"{name}-LIMITS", check=False).returncode == 0:
        pass
    _iptables("-F", f"{name}-LIMITS", check=False)
    _iptables("-X", f"{name}-LIMITS", check=False)
    while _iptables("-t", "nat", "-D", "PREROUTING", "-i", bridge, "-j", f"{name}-NAT", check=False).returncode == 0:
        pass
    _iptables("-t", "nat", "-F", f"{name}-NAT", check=False)
    _iptables("-t", "nat", "-X", f"{name}-NAT", check=False)
    try:
        client.networks.get(cfg.sandbox.network).remove()
    except docker.errors.NotFound:
        pass
