"""The supervisor: the one process that starts the platform's daemons (Cassandra, Mosquitto, the APIs and
managers; not the Docker engine, which is the machine's service), restarts each one when it dies, records
every death with its cause, caps each one's memory, and keeps their logs from growing without end.

Clients (``mysimbdp up``, ``down``, the tests) never talk to it directly: :class:`~.process.Daemon` writes
what it wants into ``$MYSIMBDP_HOME/run/supervised/<name>.json`` (the command, its memory cap, up or
down) and waits for the supervisor's answer in ``<name>.state.json``. The supervisor looks at those files
every quarter second, so it needs no socket, and a supervisor that dies and is started again (by the next
``mysimbdp up``) takes over the daemons that kept running meanwhile.

A daemon that dies while wanted is started again after 1 s, then 2, 4 ... up to 30 s while it keeps dying
within a minute of its start. Its death is logged in ``logs/supervisor.log`` and kept (the last ten) in
its state file, which ``mysimbdp status`` shows: when, the exit status or signal, whether the kernel killed
it for its memory cap, and the last line of its log.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .. import bounded
from ..daemon import write_atomic
from ..config import SOURCE_ROOT, Config
from ..errors import ServiceStartError
from .cgroups import MemoryCap, set_oom_score_adj
from .process import Daemon, pid_alive, stop_pid

log = logging.getLogger("mysimbdp.supervisor")
TICK = 0.25
MAX_BACKOFF = 30.0
STABLE = 60.0  # a daemon that ran this long before dying is restarted at once
KEEP_DEATHS = 10


@dataclass
class Program:
    """What a client wants of one daemon."""

    name: str
    argv: list[str]
    match: str
    log_file: str
    pid_file: str
    env: dict[str, str] | None = None
    cwd: str | None = None
    memory: int = 0  # bytes; 0: no cap
    java: bool = False
    oom_score_adj: int = 0
    nofile: int = 0  # open files it may have (0: as inherited)
    stop_timeout: float = 30.0
    want: str = "up"  # up | down
    request: str = ""  # a fresh id for each start asked for: the supervisor acts on it at once


@dataclass
class State:
    """What the supervisor knows of one daemon (its answer to the client)."""

    pid: int | None = None
    started_at: float | None = None
    request_done: str = ""
    error: str = ""  # why the last start failed (the program could not be run)
    restarts: int = 0
    memory_cap: str = ""
    deaths: list[dict] = field(default_factory=list)


def _dir(home: Path) -> Path:
    return home / "run" / "supervised"


def _write(path: Path, data: dict) -> None:
    """Atomically, readable by root only (a program's environment may hold anything)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(data))
    os.replace(tmp, path)


def _pid_in(pid_file: Path, match: str) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())  # bounded: the platform's own pid file (written atomically)
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid, match) else None


def read_state(home: Path, name: str) -> State:
    try:
        # bounded: the supervisor's own state file in the state folder, which no tenant can write
        return _known(State, json.loads((_dir(home) / f"{name}.state.json").read_text()))
    except (OSError, ValueError, TypeError):
        return State()


def _read_program(path: Path) -> Program | None:
    try:
        return _known(Program, json.loads(path.read_text()))  # bounded: the platform's own request file
    except (OSError, ValueError, TypeError):
        return None


def _known(cls, data: dict):
    """``cls`` from ``data``, leaving out keys it does not know (written by a newer or older version)."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def daemon(home: Path) -> Daemon:
    return Daemon("supervisor", home / "run", home / "logs", match="-m mysimbdp.services.supervisor")


def ensure_running(home: Path) -> None:
    """Start the supervisor if it is not running (it is not itself supervised: `mysimbdp up` starts it)."""
    d = daemon(home)
    if d.running():
        return
    env = dict(os.environ, MYSIMBDP_HOME=str(home))
    pid = d.spawn([sys.executable, "-m", "mysimbdp.services.supervisor"], env=env, cwd=SOURCE_ROOT)
    set_oom_score_adj(pid, -900)  # the last thing the kernel should pick
    deadline = time.monotonic() + 10
    while not (home / "run" / "supervisor.ready").exists() or not d.running():
        if time.monotonic() > deadline or not pid_alive(pid):
            raise ServiceStartError("the supervisor did not start:\n" + d.log_tail())
        time.sleep(0.05)


def request(home: Path, program: Program, timeout: float = 20.0) -> State:
    """Ask the supervisor of the state folder ``home`` for ``program`` (up or down) and wait until it has
    acted on it."""
    ensure_running(home)
    program.request = uuid.uuid4().hex
    _write(_dir(home) / f"{program.name}.json", asdict(program))
    deadline = time.monotonic() + timeout
    while True:
        st = read_state(home, program.name)
        if st.request_done == program.request:
            if st.error:
                raise ServiceStartError(f"{program.name}: {st.error}")
            return st
        if time.monotonic() > deadline:
            raise ServiceStartError(
                f"the supervisor did not act on {program.name} within {timeout:.0f}s",
                hint=f"see {home / 'logs' / 'supervisor.log'}",
            )
        if not daemon(home).running():
            ensure_running(home)
        time.sleep(0.05)


# --- scheduled backups ---------------------------------------------------------------------------------------


class BackupSchedule:
    """Scheduled backups (``backup.every_hours``; 0, the default, is none). The supervisor exists once per
    state folder, so the schedule lives here and nowhere else. When a run is due it starts
    ``mysimbdp backup --scheduled`` (the tenants of ``backup.tenants``, or all, then the retention) as a
    process of its own, its output in ``logs/backup.log``; the next run is due ``every_hours`` after that one
    started, and never starts while one runs. The last start is kept in the backup folder
    (``.schedule.json``), so a supervisor started again keeps the rhythm (with no record, a run is due at
    once)."""

    MATCH = "mysimbdp backup --scheduled"

    def __init__(self, cfg: Config, env: dict[str, str] | None = None) -> None:
        self.every = cfg.backup.every_hours * 3600
        self.env = dict(os.environ if env is None else env, MYSIMBDP_HOME=str(cfg.home))
        self.state_file = cfg.backup_folder / ".schedule.json"
        self.log_file = cfg.paths.logs / "backup.log"
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = None
        self.last_start = 0.0
        try:
            data = json.loads(self.state_file.read_text())  # bounded: the supervisor's own small file
            self.pid, self.last_start = data.get("pid"), float(data.get("last_start") or 0)
        except (OSError, ValueError, TypeError, AttributeError):
            pass

    def tick(self, exits: dict[int, int], now: float | None = None) -> bool:
        """Look once: note a run that ended, start one that is due. True when a run was started."""
        if self.every <= 0:
            return False
        now = time.time() if now is None else now
        if self.pid is not None:
            if pid_alive(self.pid, self.MATCH):
                return False
            status = exits.pop(self.pid, None)
            if status is None and self.proc is not None and self.proc.poll() is not None:
                status = self.proc.returncode << 8 if self.proc.returncode >= 0 else -self.proc.returncode
            log.info("scheduled backup (pid %d) %s; its report is in %s", self.pid, _describe(status), self.log_file)
            self.pid, self.proc = None, None
            self._save()
        if now < self.last_start + self.every:
            return False
        self.last_start = now  # also when it cannot start: tried again at the next interval, not at every tick
        try:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_file, "ab") as out:
                out.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} scheduled backup\n".encode())
                out.flush()
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "mysimbdp", "backup", "--scheduled"],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                    cwd=SOURCE_ROOT,
                    start_new_session=True,
                    close_fds=True,
                )
        except OSError as exc:
            log.error("cannot start the scheduled backup: %s", exc)
            self._save()
            return False
        self.pid = self.proc.pid
        self._save()
        log.info("started the scheduled backup (pid %d; every %.2f h)", self.pid, self.every / 3600)
        return True

    def _save(self) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(self.state_file, json.dumps({"pid": self.pid, "last_start": self.last_start}))


# --- the supervisor process ---------------------------------------------------------------------------------


class Supervisor:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.stop = threading.Event()
        self.children: dict[int, subprocess.Popen] = {}
        self.exits: dict[int, int] = {}  # pid -> wait status, for children that ended
        self.states: dict[str, State] = {}
        self.next_start: dict[str, float] = {}
        self.oom_before: dict[str, int] = {}
        self.stopping: set[str] = set()
        self.lock = threading.Lock()
        self.last_rotate = 0.0
        self.backups = BackupSchedule(cfg)

    def run(self) -> None:
        _dir(self.cfg.home).mkdir(parents=True, exist_ok=True)
        for path in sorted(_dir(self.cfg.home).glob("*.state.json")):
            name = path.name[: -len(".state.json")]
            self.states[name] = read_state(self.cfg.home, name)
        (self.cfg.paths.run / "supervisor.ready").write_text(f"{os.getpid()}\n")
        log.info("supervisor ready (pid %d)", os.getpid())
        try:
            while not self.stop.is_set():
                try:
                    self._tick()
                except Exception:  # noqa: BLE001 - the supervisor must outlive its own bugs
                    log.exception("supervisor loop error")
                self.stop.wait(TICK)
        finally:
            (self.cfg.paths.run / "supervisor.ready").unlink(missing_ok=True)
            log.info("supervisor stopping; the daemons keep running")

    # --- one look at everything ---------------------------------------------------------------------
    def _tick(self) -> None:
        with self.lock:
            self._look()

    def _look(self) -> None:
        self._reap()
        now = time.monotonic()
        for path in sorted(_dir(self.cfg.home).glob("*.json")):
            if path.name.endswith(".state.json") or path.name.startswith("."):
                continue
            p = _read_program(path)
            if p is None:
                continue
            st = self.states.setdefault(p.name, State())
            if st.pid is None and p.name not in self.stopping:  # started before this supervisor: take it over
                st.pid = _pid_in(Path(p.pid_file), p.match)
            alive = st.pid is not None and pid_alive(st.pid, p.match)
            if st.pid is not None and not alive and p.name not in self.stopping:
                self._died(p, st, now)
            if p.want == "up":
                if not alive and (st.request_done != p.request or now >= self.next_start.get(p.name, 0)):
                    self._start(p, st)
                elif alive and st.request_done != p.request:
                    st.request_done = p.request  # it runs already: nothing to do
                    st.error = ""
            elif p.want == "down" and st.request_done != p.request and p.name not in self.stopping:
                if alive:
                    self._stop_async(p, st)
                else:
                    st.pid = None
                    st.request_done = p.request
            self._save(p.name, st)
        if now - self.last_rotate > 10:
            self.last_rotate = now
            self._rotate_logs()
        self.backups.tick(self.exits)

    def _save(self, name: str, st: State) -> None:
        _write(_dir(self.cfg.home) / f"{name}.state.json", asdict(st))

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.exits[pid] = status
            self.children.pop(pid, None)

    # --- starting -------------------------------------------------------------------------------------
    def _start(self, p: Program, st: State) -> None:
        log_file = Path(p.log_file)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        cap = MemoryCap.of(self.cfg.home, p.name, p.memory)
        self.oom_before[p.name] = cap.oom_kills()
        with open(log_file, "ab") as out:
            out.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {p.name} (supervised)\n".encode())
            out.flush()
            try:
                proc = subprocess.Popen(
                    p.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=p.env,
                    cwd=p.cwd,
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as exc:
                st.error = f"cannot run {p.argv[0]}: {exc.strerror}"
                st.request_done = p.request
                st.pid = None
                self.next_start[p.name] = time.monotonic() + MAX_BACKOFF
                log.error("%s: %s", p.name, st.error)
                return
        self.children[proc.pid] = proc
        st.memory_cap = cap.apply(proc.pid, java=p.java)
        if p.nofile:
            try:
                resource.prlimit(proc.pid, resource.RLIMIT_NOFILE, (p.nofile, p.nofile))
            except (OSError, ValueError) as exc:
                log.info("%s: its open-file limit stays as inherited (%s)", p.name, exc)
        set_oom_score_adj(proc.pid, p.oom_score_adj)
        write_atomic(Path(p.pid_file), f"{proc.pid}\n")  # a client polling it never reads it empty
        restart = st.request_done == p.request
        st.pid, st.started_at, st.error = proc.pid, time.time(), ""
        st.request_done = p.request
        log.info("%s %s: pid %d, memory cap %s", "restarted" if restart else "started", p.name, proc.pid, st.memory_cap)

    # --- dying ----------------------------------------------------------------------------------------
    def _died(self, p: Program, st: State, now: float) -> None:
        pid = st.pid
        status = self.exits.pop(pid, None) if pid is not None else None
        ran = time.time() - (st.started_at or time.time())
        cause = _describe(status)
        kills = MemoryCap.of(self.cfg.home, p.name, p.memory).oom_kills()
        if kills > self.oom_before.get(p.name, kills):
            cause += f"; the kernel killed it at its memory cap ({p.memory >> 20} MiB)"
        elif status is not None and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
            cause += " (by someone, or by the kernel when the machine ran out of memory)"
        death = {
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "pid": pid,
            "cause": cause,
            "ran_seconds": round(ran, 1),
            "last_log_line": bounded.last_line(Path(p.log_file)),
        }
        st.deaths = (st.deaths + [death])[-KEEP_DEATHS:]
        st.pid = None
        Path(p.pid_file).unlink(missing_ok=True)
        if p.want == "up":
            st.restarts += 1
            quick = 0  # deaths in a row, each within STABLE seconds of its start
            for d in reversed(st.deaths):
                if d["ran_seconds"] >= STABLE:
                    break
                quick += 1
            delay = 0.0 if ran >= STABLE else min(2 ** (quick - 1), MAX_BACKOFF)
            self.next_start[p.name] = now + delay
            log.error(
                "%s died: %s; last log line: %s; starting it again in %.0fs",
                p.name,
                cause,
                death["last_log_line"] or "-",
                delay,
            )
        else:
            log.info("%s ended: %s", p.name, cause)

    # --- stopping -------------------------------------------------------------------------------------
    def _stop_async(self, p: Program, st: State) -> None:
        self.stopping.add(p.name)
        pid = st.pid

        def stop():
            try:
                stop_pid(pid, p.stop_timeout, reap=False)
                for _ in range(100):  # the main loop reaps our children
                    if not pid_alive(pid):
                        break
                    time.sleep(0.05)
            finally:
                with self.lock:
                    st.pid = None
                    st.request_done = p.request
                    self.exits.pop(pid, None)
                    Path(p.pid_file).unlink(missing_ok=True)
                    self.stopping.discard(p.name)
                    log.info("stopped %s on request", p.name)

        threading.Thread(target=stop, name=f"stop-{p.name}", daemon=True).start()

    # --- logs -----------------------------------------------------------------------------------------
    def _rotate_logs(self) -> None:
        """Keep each daemon's log under ``max_log_mb``: copy it aside (two old copies kept), then truncate
        it in place (the daemon appends; it never notices)."""
        limit = self.cfg.supervisor.max_log_mb << 20
        for log_file in sorted(self.cfg.paths.logs.glob("*.log")):
            try:
                if log_file.stat().st_size <= limit:
                    continue
                old1, old2 = log_file.with_suffix(".log.1"), log_file.with_suffix(".log.2")
                if old1.exists():
                    os.replace(old1, old2)
                shutil.copyfile(log_file, old1)
                os.truncate(log_file, 0)
                log.info("rotated %s", log_file.name)
            except OSError as exc:
                log.warning("cannot rotate %s: %s", log_file.name, exc)


def _describe(status: int | None) -> str:
    if status is None:
        return "exited (its status is unknown: it was started by an earlier supervisor)"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return f"killed by signal {signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else sig}"
    return f"exited with status {os.WEXITSTATUS(status)}"


def main() -> int:
    from .. import config as config_mod
    from ..daemon import setup_logging

    cfg = config_mod.load()
    setup_logging(cfg)
    sup = Supervisor(cfg)
    signal.signal(signal.SIGTERM, lambda *_: sup.stop.set())
    signal.signal(signal.SIGINT, lambda *_: sup.stop.set())
    sup.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
