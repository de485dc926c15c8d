"""The alerts service: readings -> rules -> alert lifecycle -> alerts table + Kafka.

Per batch, in this order:
  1. judge the readings' quality with the processor's own QARTOD evaluator
     (services/quality/qartod.py, same defaults file, windows warmed from `readings`):
     the Kafka record carries no flag, and reading the processor's stored flags would race
     with it (both consume the same records in parallel), so the alerts service computes
     the same flags itself;
  2. evaluate the readings against the rules (pure, `engine.evaluate`), with each
     device's registry area and whether it is simulated (the `devices` table, reloaded
     every `AREA_REFRESH_S` and when an unknown device appears; a simulated device's
     alerts are CAP `Exercise`) and each record's partition as its stream;
  3. store transitions, events, per-rule state and stream heads in one transaction;
  3. commit the Kafka offsets;
  4. publish unpublished events from the `alert_events` outbox to `citywatch.alerts.v1`,
     then mark them published.
A crash between 2 and 4 leaves events unpublished, and the next start publishes them: an
event is published at least once and, with no crash in that window, exactly once. Consumers
deduplicate on `event_id`.

Rules reload: the service polls the rules file's mtime every `RULES_POLL_S` seconds and
reloads on SIGHUP. A file that does not validate is refused with its line and reason in the
log (and `citywatch_alerts_rules_reload_failures_total`); the service keeps its last good
rules. Polling, not only SIGHUP, because a Kubernetes ConfigMap or a deploy tool replaces
the file without signalling anyone.

Several instances: active/standby per consumer group (services/alerts/leadership.py has
the lock and the split-brain reasoning). Only the instance holding the group's advisory
lock joins the readings consumer group, evaluates, and publishes the outbox; one term of
leadership starts by rebuilding state from the database, exactly as a start does, and
ends by leaving the group and dropping the in-memory state before the lock is released
(or, when the lock session failed, before contending again). A standby:
- does not consume readings, and retries the lock every second;
- answers `/readyz` 503 with the failing check `leader` (it cannot do the service's work
  now; `/healthz` says it is alive) and exports `citywatch_alerts_leader` 0, so a load
  balancer that follows `/readyz` sends the HTTP API to the leader, and it follows the
  leadership when it moves;
- still serves the HTTP API (alerts list, acknowledgements, CAP feeds): it reads and writes
  the database only, and an acknowledgement made there lands in the outbox, which the
  leader publishes within the pump's period;
- still runs the embedded notifiers (`CITYWATCH_ALERTS__DELIVERY`): they consume
  `citywatch.alerts.v1` in their own consumer group, deduplicate events on `event_id` and
  lease deliveries and reminders with `FOR UPDATE SKIP LOCKED`, so any number of
  instances share that work safely (services/alerts/delivery/service.py).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from contextlib import AsyncExitStack, suppress
from datetime import UTC, datetime

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from pydantic import ValidationError

from schemas import Reading
from services.alerts import api, store
from services.alerts import metrics as m
from services.alerts.areas import city_areas
from services.alerts.delivery.service import DeliveryService
from services.alerts.engine import (
    Evaluation,
    Key,
    Parked,
    RuleState,
    evaluate,
    live_heads,
    tick,
)
from services.alerts.leadership import Leadership
from services.alerts.rules import RuleSet, check_areas, load_rules
from services.alerts.titles import transition_titles
from services.common import db, kafka
from services.common.batches import Batch, BatchLoop, Upstreams, probe_upstreams
from services.common.errors import ConfigError, DatabaseUnavailable, KafkaUnavailable
from services.common.http import HttpServer
from services.common.lifecycle import BackgroundTasks, ServiceBase
from services.common.settings import Settings
from services.quality import Evaluation as Judged
from services.quality import QualityEvaluator, load_quality_config
from services.quality.drift_refresh import DriftRefresh

log = logging.getLogger(__name__)

AREA_REFRESH_S = 30.0  # the device -> area map is reloaded this often
UNKNOWN_DEVICE_REFRESH_S = 2.0  # ... and at most this often when a device is not in it
RULES_POLL_S = 2.0  # the rules file's mtime is checked this often
# A write the offline tick leaves to its next period (the batch loop reports the outage).
_DEFERRED: tuple[type[BaseException], ...] = (DatabaseUnavailable, *db.CONNECTION_ERRORS)
OFFLINE_TICK_S = 5.0  # live streams' offline check follows the wall clock this often


class _ReloadOnAssign(ConsumerRebalanceListener):  # type: ignore[misc]
    """After a rebalance the evaluation state is rebuilt from the database, because another
    instance may have advanced it for the partitions we now own."""

    def __init__(self, service: AlertsService) -> None:
        self._service = service

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        return None  # each batch commits right after its transaction: nothing to flush

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self._service.state_stale = True


class AlertsService(ServiceBase):
    """`async with AlertsService(settings) as svc: await svc.run()`."""

    def __init__(self, settings: Settings, rules: RuleSet | None = None) -> None:
        self.settings = settings
        self.rules_path = settings.alerts.rules_file
        self._rules_mtime = self._mtime()
        self.city = city_areas(settings.city_file)
        # Areas are the city's ids: rules naming another area are refused at load.
        self.rules = (
            check_areas(rules, self.city.city)
            if rules
            else load_rules(self.rules_path, self.city.city)
        )
        self.quality = QualityEvaluator(load_quality_config(settings.quality_file))
        # The processor's drift check on the same schedule: the flag an alert acts on is
        # the one stored (services/quality/drift_refresh.py).
        self._drift = DriftRefresh(self.quality, settings.processor.drift_refresh_s)
        self.stop_event = asyncio.Event()
        self.state: dict[Key, RuleState] = {}
        self.heads: dict[str, datetime] = {}
        # When each head last advanced, by the wall clock: a live stream's offline clock.
        self.heads_seen: dict[str, datetime] = {}
        # Devices held as clock-skewed per stream (engine.evaluate `ahead`; memory only).
        self.ahead: dict[str, dict[str, datetime]] = {}
        # Readings held as clock-skewed, evaluated when their stream catches up (`parked`).
        self.parked: Parked = {}
        # One evaluation at a time: a batch and the wall-clock offline tick share the state.
        self._eval_lock = asyncio.Lock()
        self.areas: dict[str, str | None] = {}
        self.simulated: frozenset[str] = frozenset()  # registered as simulated: Exercise
        self._areas_read_at = -1e9
        self._reload_wanted = asyncio.Event()
        self.state_stale = True
        self._outbox_dirty = True
        self._outbox_lock = asyncio.Lock()
        self.health = Upstreams()
        self._pool: asyncpg.Pool | None = None
        self._producer: AIOKafkaProducer | None = None
        self._delivery: DeliveryService | None = None
        self._consumer: AIOKafkaConsumer | None = None  # only while leading
        self._leadership = Leadership(settings.database_dsn, settings.alerts.group_id)
        self._leading = False

    async def _open(self, stack: AsyncExitStack) -> None:
        s = self.settings
        client_id = f"citywatch-alerts-{s.alerts.group_id}"
        alerts_api = api.AlertsApi(lambda: self._pool, s)
        await stack.enter_async_context(
            HttpServer(
                service="alerts",
                host=s.http_host,
                port=s.alerts.http_port,
                ready_checks=self.ready_checks,
                routes=alerts_api.routes(),
                operator=alerts_api.operator,
            )
        )
        self._pool = await stack.enter_async_context(db.create_pool(s.database_dsn))
        self._producer = await stack.enter_async_context(
            kafka.producer(s, account="citywatch-alerts", client_id=client_id, stop=self.stop_event)
        )
        # The readings consumer is opened per term of leadership, in `_lead`: a standby
        # must not join the group. The lock session closes last but one, after the
        # term (and so the group membership) has ended.
        await stack.enter_async_context(self._leadership)
        # The notifiers (MQTT, webhooks, e-mail) run in this process, reading the
        # transitions this service publishes, with their own consumer group and state.
        if s.alerts.delivery:
            self._delivery = await stack.enter_async_context(DeliveryService(s, http=False))

    def ready_checks(self) -> dict[str, bool]:
        """While leading: Kafka and the database. On a standby: the failing check `leader`
        (and whether the database answered the last try for the lock)."""
        if self._leading:
            checks = {"leader": True, **self.health.checks()}
        else:
            checks = {"leader": False, "database": self._leadership.database_ok}
        if self._delivery is not None:
            checks |= {f"delivery_{k}": v for k, v in self._delivery.ready_checks().items()}
        m.READY.set(1 if all(checks.values()) else 0)
        return checks

    async def run(self) -> None:
        log.info(
            "alerts running",
            extra={
                "rules": [r.id for r in self.rules.rules],
                "group": self.settings.alerts.group_id,
            },
        )
        m.LEADER.set(0)
        async with BackgroundTasks() as watcher:
            watcher.start(self._watch_rules())
            aio_loop = asyncio.get_running_loop()
            aio_loop.add_signal_handler(signal.SIGHUP, self._reload_wanted.set)
            # Not a background task: the notifiers are stopped and drain, not cancelled.
            delivery = (
                asyncio.create_task(self._delivery.run()) if self._delivery is not None else None
            )
            try:
                # Standby until the lock is ours, lead until stopped or the lock session
                # fails, then contend again: see services/alerts/leadership.py.
                while await self._leadership.acquire(self.stop_event):
                    await self._lead()
            finally:
                if delivery is not None and self._delivery is not None:
                    self._delivery.stop_event.set()  # drains its in-flight deliveries
                    await delivery
                aio_loop.remove_signal_handler(signal.SIGHUP)

    async def _lead(self) -> None:
        """One term of leadership: join the group, evaluate until the service stops or the
        lock session fails, then leave the group, drop the memory state, free the lock."""
        s = self.settings
        lost = self._leadership.lost
        term = asyncio.Event()  # set when this term must end (stop, or lost leadership)
        ender = asyncio.create_task(_set_on_first(term, self.stop_event, lost))
        self._begin_term()
        try:
            async with kafka.consumer(
                s,
                account="citywatch-alerts",
                group_id=s.alerts.group_id,
                topics=[s.topics.readings],
                client_id=f"citywatch-alerts-{s.alerts.group_id}",
                listener=_ReloadOnAssign(self),
                max_poll_records=s.alerts.batch_size,
                stop=term,
            ) as consumer:
                self._consumer = consumer
                await self._evaluate_term(consumer, term)
        except KafkaUnavailable:
            if not term.is_set():
                raise
            # Kafka was down while the term began, and the term ended before it came back.
        finally:
            self._consumer = None
            ender.cancel()
            with suppress(asyncio.CancelledError):
                await ender
            self._end_term(lost=lost.is_set())
            await self._leadership.release()  # only now may another instance take over

    async def _evaluate_term(self, consumer: AIOKafkaConsumer, term: asyncio.Event) -> None:
        assert self._pool is not None
        loop = BatchLoop(
            consumer,
            batch_size=self.settings.alerts.batch_size,
            max_wait_ms=self.settings.alerts.batch_max_wait_ms,
            stop=term,
            health=self.health,
        )
        async with BackgroundTasks() as background:
            background.start(probe_upstreams(self.health, self._pool, consumer))
            background.start(self._pump_outbox())
            background.start(self._offline_clock())
            await self._publish_outbox()  # events a crash (or a lost term) left unpublished
            await loop.run(self._handle, after_commit=self._after_commit)
            if not self._leadership.lost.is_set():
                await self._publish_outbox()

    def _begin_term(self) -> None:
        self._leading = True
        self._drop_state()
        self.health = Upstreams()
        m.LEADER.set(1)
        log.info(
            "alerts leader: evaluating",
            extra={"group": self.settings.alerts.group_id, "lock_key": self._leadership.key},
        )

    def _end_term(self, *, lost: bool) -> None:
        self._leading = False
        self._drop_state()
        m.LEADER.set(0)
        m.ACTIVE.set(0)
        log.info(
            "alerts leader: term ended",
            extra={"group": self.settings.alerts.group_id, "lost": lost},
        )

    def _drop_state(self) -> None:
        """Forget what a term learnt: the next term rebuilds it from the database, because
        another instance may have advanced it meanwhile."""
        self.state, self.heads, self.heads_seen = {}, {}, {}
        self.quality.forget()
        self.state_stale = True
        self._areas_read_at = -1e9

    # -- rules reload -----------------------------------------------------------------------

    def _mtime(self) -> float | None:
        try:
            return self.rules_path.stat().st_mtime
        except OSError:
            return None

    async def _watch_rules(self) -> None:
        """Forever: reload the rules on SIGHUP or when the file's mtime changes."""
        while True:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._reload_wanted.wait(), RULES_POLL_S)
            signalled = self._reload_wanted.is_set()
            self._reload_wanted.clear()
            mtime = self._mtime()
            if signalled or mtime != self._rules_mtime:
                self._rules_mtime = mtime
                async with self._eval_lock:  # never while a batch is judged in its thread
                    self.reload_rules()

    def reload_rules(self) -> bool:
        """Load the rules file; keep the last good rules when it is refused."""
        try:
            fresh = load_rules(self.rules_path, self.city.city)
        except ConfigError as exc:
            m.RULES_REFUSED.inc()
            log.error(
                "alert rules refused; keeping the last good rules",
                extra={"file": str(self.rules_path), "reason": str(exc)},
            )
            return False
        old = {r.id: r for r in self.rules.rules}
        changed = {r.id for r in fresh.rules if old.get(r.id) not in (None, r)}
        for (rule_id, _subject), st in self.state.items():
            if rule_id in changed:  # window data of another definition: start it again
                st.data, st.pend_since, st.low_since, st.low_max = {}, None, None, 0
        self.rules = fresh
        m.RULES_RELOADED.inc()
        log.info(
            "alert rules loaded",
            extra={"file": str(self.rules_path), "rules": [r.id for r in fresh.rules],
                   "changed": sorted(changed)},
        )  # fmt: skip
        return True

    async def _refresh_areas(self, con: db.Conn, readings: list[Reading]) -> None:
        now = time.monotonic()
        since = now - self._areas_read_at
        unknown = any(r.device_id not in self.areas for r in readings)
        if since >= AREA_REFRESH_S or (unknown and since >= UNKNOWN_DEVICE_REFRESH_S):
            # Rules name areas by id; a row registered before ids were enforced may hold a
            # name or alias, resolved here by the one resolver (City.resolve).
            city = self.city.city
            self.areas = {
                d: (known.id if (known := city.resolve(a)) is not None else a)
                for d, a in (await store.load_areas(con)).items()
            }
            self.simulated = await store.load_simulated(con)
            self._areas_read_at = now

    def _judge(self, readings: list[Reading], streams: list[str]) -> tuple[Judged, Evaluation]:
        """The quality checks and the rules over one batch: pure CPU, no I/O."""
        judged = self.quality.evaluate(readings)
        # Earlier readings' final verdicts (the spike test judges a reading when its
        # successor arrives): rules with `confirm: final` act on those.
        flags = dict(judged.flags)
        for device_id, metric, at, flag in judged.reflags:
            row = (device_id, metric, at)
            flags[row] = max(flag, flags.get(row, flag))
        ev = evaluate(
            self.rules,
            self.state,
            readings,
            streams=streams,
            heads=self.heads,
            areas=self.areas,
            flags=flags,
            simulated=self.simulated,
            ahead=self.ahead,
            parked=self.parked,
        )
        return judged, ev

    async def _handle(self, batch: Batch) -> None:
        async with self._eval_lock:
            await self._handle_locked(batch)

    async def _handle_locked(self, batch: Batch) -> None:
        readings: list[Reading] = []
        streams: list[str] = []
        for rec in batch.records:
            try:
                readings.append(Reading.from_kafka(rec.value))
            except ValidationError:
                continue  # the processor forwards undecodable records to the rejected topic
            streams.append(f"{rec.topic}:{rec.partition}")
        group = self.settings.alerts.group_id
        try:
            # The lock session, not the pool: a write can then commit only while this
            # instance still holds the leadership (the fence; see leadership.py).
            async with self._leadership.connection() as con:
                if self.state_stale:
                    self.state = await store.load_state(con, self.rules)
                    self.heads, self.heads_seen = await store.load_heads(con, group)
                    self.ahead, self.parked = {}, {}
                    self.quality.forget()
                    self.state_stale = False
                await self._refresh_areas(con, readings)
                await self._drift.run(con)
                missing = self.quality.missing(readings)
                if missing:
                    per_series = self.quality.config.limits.window_points
                    for key, rows in (await db.recent_values(con, missing, per_series)).items():
                        self.quality.warm(key, rows)
                # CPU-bound for a whole batch (seconds while a backlog drains on a busy box):
                # in a worker thread, so the event loop keeps answering Kafka heartbeats and
                # /readyz. `_eval_lock` (held here, by the offline clock and by rule reloads)
                # keeps anything else from touching the state meanwhile.
                judged, ev = await asyncio.to_thread(self._judge, readings, streams)
                arrived = datetime.now(UTC)
                for stream in ev.heads:
                    self.heads_seen[stream] = arrived
                titles = [transition_titles(t, self.city) for t in ev.transitions]
                async with con.transaction():
                    await store.apply(con, ev, group, titles)
        except DatabaseUnavailable:
            self.state_stale = True  # memory may be ahead of the database now
            raise
        except db.CONNECTION_ERRORS as exc:
            self.state_stale = True
            raise DatabaseUnavailable("postgresql", repr(exc)) from exc
        self.quality.commit(judged)
        m.READINGS.inc(len(readings))
        m.STALE.inc(ev.stale)
        m.SKEWED.inc(ev.skewed)
        m.QUALITY_SKIPPED.inc(ev.skipped_quality)
        for t in ev.transitions:
            m.TRANSITIONS.labels(t.kind, t.severity).inc()
            log.info(
                "alert transition",
                extra={
                    "transition": t.kind,
                    "alert_id": str(t.alert_id),
                    "rule": t.rule.id,
                    "device_id": t.device_id,
                    "area": t.area,
                    "severity": t.severity,
                    "previous_severity": t.previous_severity,
                    "value": t.value,
                    "at": t.at.isoformat(),
                },
            )
        m.ACTIVE.set(sum(1 for st in self.state.values() if st.open))
        self._outbox_dirty = self._outbox_dirty or bool(ev.transitions)

    async def _offline_clock(self) -> None:
        """Every `OFFLINE_TICK_S`, the offline rules against the live streams' wall-clock
        heads (engine.live_heads): devices of a partition that has fallen silent as a whole
        are reported too. Replayed history is not live, so this adds nothing to it."""
        while True:
            await asyncio.sleep(OFFLINE_TICK_S)  # the check's period
            async with self._eval_lock:
                if self.state_stale or not self.heads:
                    continue  # the next batch rebuilds the state first
                clock = live_heads(
                    self.heads, self.heads_seen, datetime.now(UTC), self.rules.live_lag
                )
                ev = tick(
                    self.rules,
                    self.state,
                    clock,
                    areas=self.areas,
                    simulated=self.simulated,
                    ahead=self.ahead,
                )
                if not ev.transitions:
                    continue
                titles = [transition_titles(t, self.city) for t in ev.transitions]
                try:
                    async with self._leadership.connection() as con, con.transaction():
                        await store.apply(con, ev, self.settings.alerts.group_id, titles)
                except _DEFERRED as exc:
                    self.state_stale = True  # memory is ahead of the database: rebuild
                    log.warning("offline check deferred", extra={"error": repr(exc)})
                    continue
            for t in ev.transitions:
                m.TRANSITIONS.labels(t.kind, t.severity).inc()
                log.info(
                    "alert transition (wall clock)",
                    extra={"transition": t.kind, "alert_id": str(t.alert_id),
                           "rule": t.rule.id, "device_id": t.device_id,
                           "at": t.at.isoformat()},
                )  # fmt: skip
            self._outbox_dirty = True
            await self._publish_outbox()

    async def _after_commit(self, _batch: Batch) -> None:
        if self._outbox_dirty:
            await self._publish_outbox()

    async def _pump_outbox(self) -> None:
        """Every 2 s, publish what other writers left in the outbox: acknowledgements made
        through the HTTP API, and events a failed publish deferred."""
        while True:
            await asyncio.sleep(2.0)  # the pump's period
            await self._publish_outbox()

    async def _publish_outbox(self) -> None:
        """Send every unpublished event, then mark it published. Failures leave the rows for
        the next batch or the next start: deferred, never lost. The lock keeps the batch
        loop and the pump from sending the same rows twice."""
        assert self._pool is not None and self._producer is not None
        async with self._outbox_lock:
            await self._publish_unlocked()

    async def _publish_unlocked(self) -> None:
        assert self._pool is not None and self._producer is not None
        self._outbox_dirty = False
        try:
            async with self._pool.acquire() as con:
                while rows := await store.unpublished(con, self.settings.alerts.group_id):
                    futures = [
                        await self._producer.send(
                            self.settings.topics.alerts,
                            key=str(r["alert_id"]).encode(),
                            value=store.event_message(r),
                        )
                        for r in rows
                    ]
                    await asyncio.gather(*futures)
                    await store.mark_published(con, [r["event_id"] for r in rows])
                    m.PUBLISHED.inc(len(rows))
        except (*db.CONNECTION_ERRORS, kafka.KafkaError) as exc:
            self._outbox_dirty = True
            log.warning("alert publish deferred", extra={"error": repr(exc)})


async def _set_on_first(target: asyncio.Event, *sources: asyncio.Event) -> None:
    """Set `target` as soon as any of `sources` is set."""
    waits = [asyncio.create_task(e.wait()) for e in sources]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        target.set()
    finally:
        for w in waits:
            w.cancel()
