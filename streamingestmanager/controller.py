"""The stream controller: the one process that starts and stops stream app instances.

Every ``stream.control_interval`` seconds (0.5), for each tenant's recorded stream state (:mod:`.state`):

1. an instance that exited by itself (a crash, the memory limit) is started again in the same slot (with a
   growing back-off if it keeps crashing); meanwhile its lanes of the inbox go to the others;
2. instances asked to stop are stopped gracefully (``leave``, or ``pause`` for the last one);
3. the count is brought to the desired number: paused slots first, then the lowest free slots; extra
   instances leave, highest slot first;
4. the lane plan: which running instance reads which lanes of the tenant's inbox (``inbox/<t>/plan``);
5. the autoscaler (:mod:`.autoscaler`) looks at the latest reports and may change the desired number.

Reports arrive over MQTT on ``reports/<tenant>/<instance>`` (only that instance may publish there); each
is checked, stored in the platform keyspace, and kept in memory for the autoscaler.
"""

from __future__ import annotations

import json
import logging
import queue
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone

import paho.mqtt.client as mqtt
from cassandra import InvalidRequest, Unauthorized
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from mysimbdp import bounded, broker, daemon, db, inbox, metrics, names, nodewatch
from mysimbdp.config import Config
from mysimbdp.errors import MysimbdpError, TenantError
from mysimbdp.sandbox import runtime as sandbox_runtime
from mysimbdp.services import mosquitto_broker
from mysimbdp.tenants import Registry, Tenant, TenantCache

from . import autoscaler
from .instances import Instances, slot_number
from .state import StreamStore, parse_report

log = logging.getLogger("streamingestmanager.controller")


class Controller:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.stop = threading.Event()
        self.sessions = db.SessionHolder(cfg)
        self.runtime = sandbox_runtime(cfg)
        self.instances = Instances(cfg, self.runtime)
        self.latest: dict[tuple[str, str], tuple[float, dict]] = {}  # (tenant, slot) -> (received, report)
        self.reports_in: queue.Queue = queue.Queue(maxsize=10000)
        # an instance reports every report_interval_seconds (at least 1): 5 at once and 2 a second is plenty
        self.report_rate = bounded.RateLimit(per_second=2.0, burst=5)
        self.complaints: dict[tuple[str, str], int] = {}
        self.complained_at: dict[tuple[str, str], float] = {}
        self.stopping: dict[tuple[str, str], Future] = {}
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="stop")
        self.crashes: dict[tuple[str, str], tuple[int, float]] = {}  # -> (crashes in a row, next start allowed)
        self._tenants = TenantCache(lambda: self.registry)
        self.started_at: dict[tuple[str, str], float] = {}
        self.broker_users: set[str] = set()
        self.store: StreamStore | None = None
        self.registry: Registry | None = None
        self.plans: dict[str, tuple[list[str], int]] = {}  # tenant -> (slots reading its lanes, version)
        self.mqtt: mqtt.Client | None = None

    # --- setup ---------------------------------------------------------------------------------------------
    def _connect(self) -> None:
        daemon.when_ready(self.stop, self._open)

    def _open(self) -> None:
        session = self.sessions.get()
        self.registry = Registry(self.cfg, session)
        self.store = StreamStore(self.cfg, session)

    def _listen(self) -> mqtt.Client:
        user, password = mosquitto_broker.service_login(self.cfg)
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=broker.session_client_id("mysimbdp-stream-controller", password),
            protocol=mqtt.MQTTv5,
        )
        c.username_pw_set(user, password)
        c.reconnect_delay_set(0.5, 5)
        c.on_connect = self._on_connect
        c.on_message = self._on_report
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600  # reports wait while the controller restarts
        c.connect_async(self.cfg.broker.host, self.cfg.broker.port, keepalive=20, clean_start=False, properties=props)
        c.loop_start()
        return c

    def _on_connect(self, client, userdata, flags, rc, props) -> None:
        if not rc.is_failure:
            mosquitto_broker.no_delay(client)
            client.subscribe(broker.REPORTS_FILTER, qos=1)

    def _on_report(self, client, userdata, msg) -> None:
        """One report from an instance (tenant code). Whatever it holds, this returns normally: an exception
        here would end the MQTT client's network thread, and no report of any tenant would be read again."""
        try:
            self._take_report(msg.topic, msg.payload)
        except Exception:  # noqa: BLE001 - see the docstring
            log.error("a report on %s could not be handled", bounded.printable(str(msg.topic), 120), exc_info=True)

    def _take_report(self, topic: str, payload: bytes) -> None:
        now = time.monotonic()
        try:
            tenant, slot = broker.parse_report_topic(topic)
        except ValueError:
            return
        key = (tenant, slot)
        if not self.report_rate.allow(key, now):  # a flood costs the flooder its reports, nobody else anything
            self._complain(key, now, "reports come faster than the platform reads them; the excess is dropped")
            return
        try:
            report = parse_report(tenant, slot, payload)
        except (ValueError, ArithmeticError, TenantError) as exc:
            self._complain(key, now, f"a report was ignored: {exc}")
            return
        self.latest[key] = (now, report)
        try:
            self.reports_in.put_nowait(report)
        except queue.Full:
            self._complain(key, now, "the report queue is full; a report was not stored")

    def _complain(self, key: tuple[str, str], now: float, what: str) -> None:
        """Log a problem with an instance's reports at most once a minute per instance."""
        self.complaints[key] = self.complaints.get(key, 0) + 1
        if now - self.complained_at.get(key, -1e9) >= 60:
            log.warning(
                "%s/%s: %s (%d such in the last minute)",
                key[0],
                key[1],
                bounded.printable(what),
                self.complaints.pop(key),
            )
            self.complained_at[key] = now

    def _store_reports(self) -> None:
        while True:
            r = self.reports_in.get()
            if r is None:
                return
            try:
                if self.tenant(r["tenant"]) is None:  # a dry run's instance (mysimbdp/dryrun.py), a deleted tenant
                    continue
                self.store.add_report(r)
            except Exception as exc:  # noqa: BLE001 - Cassandra away: the report is only lost from history
                log.warning("could not store a report of %s/%s: %s", r["tenant"], r["instance"], exc)

    def tenant(self, name: str) -> Tenant | None:
        return self._tenants.get(name)

    # --- acting ----------------------------------------------------------------------------------------------
    def _decide(self, tenant: str, action: str, before: int, after: int, reason: str) -> None:
        log.info("%s %s: %d -> %d (%s)", tenant, action, before, after, reason)
        metrics.SCALING_DECISIONS.labels(tenant, action).inc()
        try:
            self.store.add_decision(tenant, action, before, after, reason)
        except Exception as exc:  # noqa: BLE001
            log.warning("could not record a decision for %s: %s", tenant, exc)

    def _stop_async(self, tenant: str, slot: str, mode: str, why: str) -> None:
        key = (tenant, slot)
        if key in self.stopping:
            return

        def run():
            try:
                if mode == "pause":  # recorded first: a paused slot starts first next time
                    self.store.park(tenant, slot)
                self.instances.stop(tenant, slot, mode)
            finally:
                self.latest.pop(key, None)

        log.info("stopping %s/%s (%s): %s", tenant, slot, mode, why)
        self.stopping[key] = self.pool.submit(run)

    def _start(self, t: Tenant, slot: str) -> bool:
        key = (t.name, slot)
        crashes, allowed = self.crashes.get(key, (0, 0.0))
        if time.monotonic() < allowed:
            return False
        try:
            ks = names.tenant(t.name)
            for cql in inbox.schema(ks, self.cfg.stream.inbox_retention_hours):  # what the instance will read
                self.sessions.get().execute(cql)
            self.instances.start(t, slot)
        except (InvalidRequest, Unauthorized) as exc:  # its keyspace refuses: it dropped it, say
            log.warning("cannot start %s/%s: its inbox: %s", t.name, slot, exc)
            self.crashes[key] = (crashes, time.monotonic() + 5)
            return False
        except MysimbdpError as exc:
            log.warning("cannot start %s/%s: %s", t.name, slot, exc.one_line())
            self.crashes[key] = (crashes, time.monotonic() + 5)
            return False
        self.crashes[key] = (crashes, time.monotonic())
        self.started_at[key] = time.monotonic()
        return True

    def reconcile(self, st) -> None:
        t = self.tenant(st.tenant)
        name = st.tenant
        for key in [k for k, f in self.stopping.items() if f.done()]:
            del self.stopping[key]
        busy = {slot for (tn, slot) in self.stopping if tn == name}
        insts = {s: i for s, i in self.instances.of(name, brief=True).items() if s not in busy}
        if t is None:  # the tenant is gone: nothing of it may run
            for slot in insts:
                self._stop_async(name, slot, "leave", "the tenant no longer exists")
            metrics.STREAM_INSTANCES.labels(name).set(0)
            return
        running = {s: i for s, i in insts.items() if i.state == "running"}
        # a slot whose broker user outlived its container was paused (by `mysimbdp down`, or
        # crashed while the controller was away): it counts as parked
        prefix = f"app.{name}."
        for u in self.broker_users:
            slot = u[len(prefix) :] if u.startswith(prefix) else None
            if slot and slot not in insts and slot not in busy and slot not in st.parked:
                st.parked.add(slot)
        # 1. crashed instances come back in the same slot (their lanes go to the others meanwhile)
        for slot, inst in insts.items():
            if inst.state == "running" or inst.state == "created":
                continue
            key = (name, slot)
            crashes, _ = self.crashes.get(key, (0, 0.0))
            quick = time.monotonic() - self.started_at.get(key, 0) < 30
            crashes = crashes + 1 if quick else 1
            self.crashes[key] = (crashes, time.monotonic() + (min(2 ** (crashes - 1), 60) if crashes > 1 else 0))
            why = (
                "killed: over its memory limit"
                if inst.container.oom_killed
                else f"exited with status {inst.container.exit_code}"
            )
            self.runtime.remove(inst.container.name)
            self.latest.pop(key, None)
            if st.running:
                self.store.park(name, slot)  # it comes back in the same slot
                st.parked.add(slot)
                self._decide(name, "restart", len(running), len(running) + 1, f"instance {slot} {why}")
        # 2. stop requests
        for slot in sorted(st.stop_requests):
            if slot in running:
                mode = "leave" if len(running) > 1 else "pause"
                self._stop_async(name, slot, mode, "asked to stop")
                running.pop(slot)
            self.store.stop_done(name, slot)
        # 3. the count. While any instance is wanted, every paused slot runs
        # first, and extras leave below.
        want = st.desired if st.running else 0
        if want > 0:
            waiting = set()
            for slot in sorted(st.parked, key=slot_number):
                if slot in running or slot in busy:
                    continue
                if self._start(t, slot):
                    running[slot] = None
                    self.store.unpark(name, slot)
                else:
                    waiting.add(slot)  # backing off after crashes: no stand-in, the slot owns its messages
            free = (
                f"s{n}"
                for n in range(64)
                if f"s{n}" not in running and f"s{n}" not in busy and f"s{n}" not in st.parked
            )
            while len(running) + len(waiting) < want:
                slot = next(free)
                if not self._start(t, slot):
                    break
                running[slot] = None
        for slot in sorted(running, key=slot_number, reverse=True):
            if len(running) <= want:
                break
            mode = "leave" if len(running) > 1 else "pause"
            self._stop_async(name, slot, mode, "scaling down" if st.running else "the stream is stopped")
            running.pop(slot)
        # 4. which instance reads which lanes of the inbox: those that run and have reported
        ready = sorted((s for s in running if (name, s) in self.latest), key=slot_number)
        if ready or not running:  # a controller just started has no reports yet: the instances keep their plan
            self._plan(name, ready)
        metrics.STREAM_INSTANCES.labels(name).set(len(running))
        # 5. the autoscaler
        if st.running and not busy:
            self.autoscale(t, st, running)

    def _plan(self, tenant: str, slots: list[str]) -> None:
        """Tell the tenant's instances the lane plan (lane i goes to ``slots[i % len(slots)]``), every round:
        QoS 0, an instance that missed one gets the next. When slots change, an instance that loses a lane may
        still finish a round of it while the new owner starts: both write the same rows (keyed by primary key)."""
        old_slots, version = self.plans.get(tenant, ([], 0))
        if slots != old_slots:
            version += 1
            self.plans[tenant] = (slots, version)
        if self.mqtt is not None:
            self.mqtt.publish(broker.plan_topic(tenant), json.dumps({"slots": slots, "version": version}), qos=0)

    def autoscale(self, t: Tenant, st, running: dict) -> None:
        policy = t.constraints.autoscale
        interval = float(t.constraints.stream["report_interval_seconds"])
        now = time.monotonic()
        fresh = []
        for slot in running:
            got = self.latest.get((t.name, slot))
            if got and now - got[0] < 2.5 * interval + 1 and got[0] > self.started_at.get((t.name, slot), 0):
                fresh.append(got[1])
        changed = st.last_change or datetime.now(timezone.utc)
        if changed.tzinfo is None:
            changed = changed.replace(tzinfo=timezone.utc)
        since = (datetime.now(timezone.utc) - changed).total_seconds()
        d = autoscaler.decide(policy, st.desired, len(running), fresh, since)
        if d is None:
            return
        if self.store.change(st, True, d.target):
            self._decide(t.name, d.action, st.desired, d.target, d.reason)

    # --- the loop ----------------------------------------------------------------------------------------------
    def run(self) -> None:
        self._connect()
        if self.stop.is_set():
            return
        client = self.mqtt = self._listen()
        writer = threading.Thread(target=self._store_reports, daemon=True)
        writer.start()
        # the Cassandra nodes' heartbeat: up/down events into the platform keyspace (mysimbdp/nodewatch.py)
        watch = nodewatch.NodeWatch(self.cfg, self.sessions.get)
        threading.Thread(target=watch.run, args=(self.stop,), daemon=True, name="nodewatch").start()
        heartbeat = self.cfg.paths.run / "stream-controller.heartbeat"
        log.info("stream controller ready")
        while not self.stop.is_set():
            t0 = time.monotonic()
            try:
                states = self.store.all()
                self.broker_users = {u.name for u in mosquitto_broker.list_users(self.cfg)}
                known = {st.tenant for st in states}
                for st in states:
                    try:
                        self.reconcile(st)
                    except Exception:  # noqa: BLE001 - one tenant's trouble (Cassandra slow on its DDL) is not the others'
                        log.warning("reconciling %s failed", st.tenant, exc_info=True)
                for c in self.runtime.list(brief=True, kind="stream"):  # instances of tenants with no stream state
                    if c.tenant not in known:
                        self._stop_async(c.tenant, c.labels.get("mysimbdp.instance", ""), "leave", "no stream state")
            except Exception:  # noqa: BLE001 - keep going: Cassandra or Docker may be back next time
                log.warning("control loop error", exc_info=True)
            daemon.beat(heartbeat)
            self.stop.wait(max(0.05, self.cfg.stream.control_interval - (time.monotonic() - t0)))
        log.info("stopping (instances keep running)")
        client.disconnect()
        client.loop_stop()
        self.reports_in.put(None)
        self.pool.shutdown(wait=True)
        self.sessions.close()


def main(argv: list[str] | None = None) -> int:
    return daemon.run_until_stopped(Controller)


if __name__ == "__main__":
    sys.exit(main())
