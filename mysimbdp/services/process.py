"""Background processes the platform runs itself: start detached, find again by pid file, stop.

Each service has a pid file in ``$MYSIMBDP_HOME/run`` and a log in ``$MYSIMBDP_HOME/logs``. A pid file
is only trusted while the process it names is alive and still runs the expected program, so a stale
file after a reboot is harmless.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from .. import bounded
from ..errors import ServiceStartError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Daemon:
    """A background process known by name: ``cassandra``, ``mosquitto``, ``batch-api``..."""

    name: str
    run_dir: Path
    log_dir: Path
    match: str  # a substring of the process's command line that proves the pid is still ours

    @property
    def home(self) -> Path:
        return self.run_dir.parent  # the state folder: run_dir is $MYSIMBDP_HOME/run

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    def pid(self) -> int | None:
        """The pid of the running process, or None."""
        try:
            pid = int(self.pid_file.read_text().strip())  # bounded: a pid file the platform wrote
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid, self.match) else None

    def running(self) -> bool:
        return self.pid() is not None

    def start(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        memory: int = 0,
        java: bool = False,
        oom_score_adj: int = 0,
        stop_timeout: float = 30.0,
        nofile: int = 0,
    ) -> int:
        """Have the supervisor run ``argv`` (and run it again whenever it dies), with at most ``memory`` bytes
        (0: no cap); its output goes to the log. Return its pid."""
        from . import supervisor

        program = supervisor.Program(
            name=self.name,
            argv=list(argv),
            match=self.match,
            log_file=str(self.log_file),
            pid_file=str(self.pid_file),
            env=dict(env) if env is not None else dict(os.environ),
            cwd=str(cwd) if cwd else None,
            memory=memory,
            java=java,
            oom_score_adj=oom_score_adj,
            stop_timeout=stop_timeout,
            nofile=nofile,
            want="up",
        )
        st = supervisor.request(self.home, program)
        return st.pid or 0

    def spawn(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> int:
        """Start ``argv`` detached from this process (own session), output appended to the log, unsupervised
        (the supervisor itself)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as out:
            out.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {self.name}\n".encode())
            out.flush()
            try:
                proc = subprocess.Popen(
                    list(argv),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=dict(env) if env is not None else None,
                    cwd=cwd,
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as exc:
                raise ServiceStartError(f"{self.name}: cannot run {argv[0]}: {exc.strerror}") from None
        self.pid_file.write_text(f"{proc.pid}\n")
        log.debug("started %s pid %s", self.name, proc.pid)
        return proc.pid

    def exited_early(self) -> bool:
        """True when the process we started is gone (it crashed while starting).

        Right after the fork the child may not have exec'd its program yet, so only its existence counts.
        """
        try:
            pid = int(self.pid_file.read_text().strip())  # bounded: a pid file the platform wrote
        except (OSError, ValueError):
            return True
        return not pid_alive(pid)

    def log_tail(self, lines: int = 15) -> str:
        try:
            data = bounded.tail(self.log_file, 20000).decode("utf-8", "replace").splitlines()
        except OSError:
            return ""
        return "\n".join(data[-lines:])

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM, wait up to ``timeout``, then SIGKILL; the supervisor is told first, so that it does not
        start it again. True if something was stopped."""
        from . import supervisor

        pid = self.pid()
        if supervisor.daemon(self.home).running() and self.name != "supervisor":
            program = supervisor.Program(
                name=self.name,
                argv=[],
                match=self.match,
                log_file=str(self.log_file),
                pid_file=str(self.pid_file),
                stop_timeout=timeout,
                want="down",
            )
            supervisor.request(self.home, program, timeout=timeout + 15)
        if pid is not None and pid_alive(pid, self.match):  # not supervised (started before the supervisor)
            stop_pid(pid, timeout)
        self.pid_file.unlink(missing_ok=True)
        return pid is not None


def pid_alive(pid: int, match: str | None = None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()  # bounded: the kernel's one-line status of a pid
        if stat.rsplit(")", 1)[1].split()[0] == "Z":  # a zombie is not alive
            return False
        # bounded: a pid of the platform's own daemons (its pid file), whose command line the kernel caps
        with open(f"/proc/{pid}/cmdline", "rb") as fh:  # a pid file may name a reused pid: 4 KiB at most
            cmdline = fh.read(4096).replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return False
    return match is None or match in cmdline


def stop_pid(pid: int, timeout: float, *, reap: bool = True) -> None:
    """SIGTERM, up to ``timeout`` seconds, then SIGKILL. ``reap``: wait for it if it is our child."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return
            if reap:
                try:  # reap it if it is our child
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
            time.sleep(0.1)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_free(host: str, port: int) -> bool:
    """True when we could bind host:port ourselves (nobody else listens there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            if exc.errno == errno.EADDRNOTAVAIL:  # the address is not (yet) on this host
                return True
            raise
    return True


def who_listens(port: int) -> str:
    """A best-effort description of the process listening on ``port`` (for error messages)."""
    target = f":{port:04X}"
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]  # bounded: the kernel's socket table, a line a socket
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if parts[1].endswith(target) and parts[3] == "0A":  # LISTEN
                inodes.add(parts[9])
    if not inodes:
        return "another process"
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    # any process's (a tenant's container's too): its first 4 KiB, for an error message
                    with open(proc / "cmdline", "rb") as fh:
                        cmd = fh.read(4096).split(b"\0")[0].decode("utf-8", "replace")
                    return f"pid {proc.name} ({Path(cmd).name})"
        except OSError:
            continue
    return "another process"


def wait_until(check, timeout: float, interval: float = 0.25, *, abort=None) -> bool:
    """Call ``check()`` until it returns true or ``timeout`` passes; ``abort()`` true stops early."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if abort is not None and abort():
            return False
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
