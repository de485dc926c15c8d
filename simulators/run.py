"""A scenario run: a fleet placed in a city, living through a scenario, as MQTT messages.

Pure generation, no I/O, reproducible from the seed: the same scenario, city, fleet size,
formats, start and seed give the same bytes. Messages come in scenario-time order; each
says which faults it carries, whether the gateway must accept it, and how many new rows it
must become, and the run writes what it expects (flood crossings per area) beside it.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.adapters import DEFAULT_FUTURE_TOLERANCE
from schemas.device import DeviceProfile
from schemas.registry import KINDS, METRICS, Kind
from simulators.areas import FLOOD_LEVELS, Area, City, load_city
from simulators.clock import ScenarioClock
from simulators.environment import Environment
from simulators.faults import DeviceFaults, FaultRates
from simulators.fleet import MALFORMED, Label, Message
from simulators.formats import FORMATS, Format, Identity, Sample, encode, iso
from simulators.scenarios import Scenario

_EARTH_M_PER_DEG = 111_320.0


@dataclass
class _Device:
    who: Identity
    area: Area
    fmt: Format
    interval: timedelta
    rng: random.Random  # measurement noise and device behaviour
    faults: DeviceFaults
    phase: float
    battery: float
    rssi: float
    capacity: float = 0.0
    items: float = 0.0
    seq: int = 0
    buffer: list[tuple[datetime, Sample, list[tuple[str, str]]]] = field(default_factory=list)
    held: Message | None = None
    silent_since: datetime | None = None  # the first reading lost to the current dropout
    missed: int = 0


@dataclass
class RunStats:
    """What the run did, for the summary and for tests of the fault rates."""

    readings: int = 0  # readings the devices took
    messages: int = 0
    rows: int = 0  # new rows the valid messages must become
    by_kind: Counter[str] = field(default_factory=Counter)
    by_format: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)  # messages (or readings) affected
    onsets: Counter[str] = field(default_factory=Counter)  # times a fault's rate fired
    scenario_time: datetime | None = None


class _ZeroNoise(random.Random):
    """A generator whose noise is always its mean: the model's noiseless value."""

    def gauss(self, mu: float = 0.0, sigma: float = 1.0) -> float:
        return mu


def _share(kinds: dict[Kind, float]) -> dict[Kind, float]:
    total = sum(kinds.values())
    return {k: v / total for k, v in kinds.items()} if total else {}


class ScenarioRun:
    """One scenario, one city, one fleet.

    Args:
        scenario: what happens (weather, faults, intervals).
        devices: fleet size, split over the four kinds (at least one each from 4 up).
        seed: everything random derives from it.
        city: where (Sihanoukville when None).
        start: scenario time of the first reading (default: the scenario's default start,
            so the whole run lies in the past and no reading is "from the future").
        wall_start / speed: the scenario clock, to know when the gateway receives a reading.
        formats: one format for every device, or {format: share}.
        prefix: MQTT prefix of native and SenML topics; `app` names the LoRaWAN application.
        id_prefix: prepended to every device id (tests use a per-test one).
        fault_scale: multiplies every fault rate (0 turns faults off).
    """

    def __init__(
        self,
        scenario: Scenario,
        *,
        devices: int = 200,
        seed: int = 1,
        city: City | None = None,
        start: datetime | None = None,
        wall_start: datetime | None = None,
        speed: float = 0.0,
        formats: Format | dict[Format, float] = "native",
        prefix: str = "citywatch",
        app: str = "citywatch",
        id_prefix: str = "",
        fault_scale: float = 1.0,
        faults: FaultRates | None = None,
        now: datetime | None = None,
    ) -> None:
        if devices < 1:
            raise ValueError("a fleet needs at least one device")
        self.scenario = scenario
        self.city = city or load_city()
        self.seed = seed
        self.id_prefix = id_prefix
        self.prefix, self.app = prefix, app
        wall_now = now or datetime.now(UTC)
        self.start = start or scenario.default_start(wall_now, self.city.utc_offset_h)
        self.end = self.start + scenario.duration
        self.clock = ScenarioClock(self.start, wall_start or wall_now, speed)
        self.rates = (faults or scenario.faults).scaled(fault_scale)
        self.env = Environment(self.city, scenario, self.start)
        shares = {formats: 1.0} if isinstance(formats, str) else dict(formats)
        if not set(shares) <= set(FORMATS):
            raise ValueError(f"formats must be among {FORMATS}")
        self.stats = RunStats()
        self.silences: list[dict[str, Any]] = []
        # Each litter station's true item count and fill level at every reading it took
        # (before faults): the ground truth of litter rules (services/evaluate/truth.py).
        self.litter_truth: dict[str, list[tuple[datetime, dict[str, float]]]] = {}
        self.devices = self._place(devices, id_prefix, shares)

    # -- the fleet ----------------------------------------------------------------------------
    def _place(self, n: int, id_prefix: str, formats: dict[Format, float]) -> list[_Device]:
        rng = random.Random(f"{self.seed}:placement")
        per_kind = {
            k: n // len(KINDS) + (1 if i < n % len(KINDS) else 0) for i, k in enumerate(KINDS)
        }
        fmt_names = sorted(formats)
        fmt_weights = [formats[f] for f in fmt_names]
        out: list[_Device] = []
        for kind in KINDS:
            hosts = [a for a in self.city.areas if a.kinds.get(kind)]
            if not hosts:
                continue
            weights = [a.kinds[kind] for a in hosts]
            for i in range(per_kind[kind]):
                # The first devices of a kind go one per area (every area gets covered),
                # the rest by the areas' weights.
                area = hosts[i] if i < len(hosts) else rng.choices(hosts, weights)[0]
                dist = area.radius_m * math.sqrt(rng.random())
                bearing = rng.uniform(0, 2 * math.pi)
                lat = area.lat + dist * math.cos(bearing) / _EARTH_M_PER_DEG
                lon = area.lon + dist * math.sin(bearing) / (
                    _EARTH_M_PER_DEG * math.cos(math.radians(area.lat))
                )
                local_id = f"{area.id}-{kind}-{i:04d}"
                device_id = f"{id_prefix}{local_id}"
                who = Identity(device_id, kind, round(lat, 5), round(lon, 5), area.id)
                fmt = rng.choices(fmt_names, fmt_weights)[0]
                # Seeded by the id without the prefix: a test's per-run prefix must not
                # change the values and faults the run generates.
                dev_rng = random.Random(f"{self.seed}:{local_id}")
                metrics = [*METRICS[kind]]
                faults = DeviceFaults(
                    self.rates,
                    random.Random(f"{self.seed}:{local_id}:faults"),
                    kind,
                    metrics,
                    self.stats.onsets,
                )
                if fmt in ("ttn", "chirpstack") and faults.clock_skew:
                    faults.clock_skew = timedelta(0)  # the network server stamps LoRaWAN time
                    self.stats.onsets["clock_skew"] -= 1
                out.append(
                    _Device(
                        who=who,
                        area=area,
                        fmt=fmt,
                        interval=self.scenario.intervals[kind],
                        rng=dev_rng,
                        faults=faults,
                        phase=dev_rng.uniform(0, 2 * math.pi),
                        battery=dev_rng.uniform(70, 99),
                        rssi=dev_rng.uniform(-118, -72),
                        capacity=dev_rng.uniform(1500, 3000)
                        if area.type == "river_mouth"
                        else dev_rng.uniform(500, 900),
                        items=0.0,
                    )
                )
                out[-1].items = out[-1].capacity * dev_rng.uniform(0.0, 0.4)
        return out

    def device_table(self) -> list[dict[str, Any]]:
        return [
            {
                "device_id": d.who.pipeline_id(d.fmt),
                "name": d.who.device_id,
                "kind": d.who.kind,
                "area": d.area.id,
                "lat": d.who.lat,
                "lon": d.who.lon,
                "format": d.fmt,
                "clock_skew_s": d.faults.clock_skew.total_seconds(),
                "drift_metric": d.faults.drift_metric,
                "low_battery": d.faults.low_battery,
            }
            for d in self.devices
        ]

    def device_profiles(self) -> list[DeviceProfile]:
        """The fleet as the device registry would hold it (kind, area, place, format): what
        an engineer registers when plugging the devices in (`citywatch demo` and
        `citywatch evaluate` do). Every one is `simulated`: its alerts are CAP `Exercise`."""
        return [
            DeviceProfile(
                device_id=d["device_id"],
                kind=d["kind"],
                name=f"{d['kind']} {d['name']}",
                area=d["area"],
                lat=d["lat"],
                lon=d["lon"],
                payload_format=d["format"],
                simulated=True,
            )
            for d in self.device_table()
        ]

    # -- readings -----------------------------------------------------------------------------
    def _healthy(self, d: _Device, t: datetime) -> dict[str, float]:
        kind = d.who.kind
        if kind == "water":
            return self.env.water(d.area, t, d.rng, d.phase)
        if kind == "air":
            return self.env.air(d.area, t, d.rng, d.phase)
        if kind == "flood":
            return self.env.flood_values(d.area, t, d.rng, d.phase)
        # litter: accumulate, collect, report
        d.items += self.env.litter_inflow(d.area, t, d.interval, d.rng)
        local = self.env.local_hour(t)
        step_h = d.interval / timedelta(hours=1)
        # A crew collects beach stations on its morning round (06:30) and any full boom.
        morning_round = d.area.type == "beach" and (local - 6.5) % 24 < step_h
        if morning_round or d.items >= d.capacity * 0.97:
            d.items = 0.0
        items = int(d.items)
        return {
            "litter_items": float(items),
            "fill_level_pct": round(min(100.0, 100 * d.items / d.capacity), 1),
            "litter_kg": round(items * 0.025, 2),  # ~25 g per item of plastic
        }

    def _sample(self, d: _Device, t: datetime) -> tuple[Sample, list[tuple[str, str]]]:
        metrics = self._healthy(d, t)
        if d.who.kind == "litter":
            self.litter_truth.setdefault(d.who.pipeline_id(d.fmt), []).append(
                (t, {m: metrics[m] for m in ("litter_items", "fill_level_pct")})
            )
        elapsed_h = (t - self.start) / timedelta(hours=1)
        applied = d.faults.distort(metrics, elapsed_h)
        progress = elapsed_h / max(self.scenario.duration / timedelta(hours=1), 1e-9)
        battery = d.faults.battery(round(d.battery - 0.4 * progress, 1), progress)
        if d.faults.low_battery:
            applied.append(("low_battery", "battery_pct"))
        metrics["battery_pct"] = battery
        metrics["rssi_dbm"] = float(round(d.rssi + d.rng.gauss(0, 2.0)))
        d.seq += 1
        if d.faults.clock_skew:
            applied.append(("clock_skew", ""))
        return Sample(
            t + d.faults.clock_skew, d.seq, metrics, round(d.rng.uniform(-5, 10), 1)
        ), applied

    def _messages_for(
        self,
        d: _Device,
        sent_at: datetime,
        samples: list[Sample],
        applied: list[tuple[str, str]],
        late: bool,
        labels: list[Label],
    ) -> list[Message]:
        """The message(s) carrying `samples`, with their faults and their expected fate."""
        names = [f for f, _ in applied]
        metric = next((m for f, m in applied if f in ("spike", "stuck", "drift") and m), None)
        if late:
            names.insert(0, "late")
        receipt = self.clock.wall_at(sent_at)
        out = []
        per_message = [samples] if d.fmt in ("native", "senml") else [[s] for s in samples]
        for (topic, payload), group in zip(
            encode(d.fmt, d.who, samples, prefix=self.prefix, app=self.app),
            per_message,
            strict=True,
        ):
            future = max(s.time for s in group) > receipt + DEFAULT_FUTURE_TOLERANCE
            # Every metric is a row; for LoRaWAN, rssi_dbm comes back from the rx metadata.
            rows = sum(len(s.metrics) for s in group)
            times = {s.time for s in group}
            out.append(
                Message(
                    topic=topic,
                    payload=payload,
                    valid=not future,
                    device_id=d.who.pipeline_id(d.fmt),
                    expected_reason="time_in_future" if future else None,
                    faults=tuple(dict.fromkeys(names)),
                    fault_metric=metric,
                    kind=d.who.kind,
                    format=d.fmt,
                    sent_at=sent_at,
                    readings=len(group),
                    row_count=0 if future else rows,
                    labels=tuple(lb for lb in labels if lb[0] in times),
                )
            )
        return out

    def _malformed(self, d: _Device, msg: Message) -> Message:
        if d.fmt == "native":
            reason, make = d.faults.rng.choice(MALFORMED)
            payload = make(d.who.kind, d.who.device_id)
        else:
            reason, payload = d.faults.rng.choice(
                [("not_json", b'{"truncated": '), ("not_utf8", b"\xff\xfe\x00\x81")]
            )
        return Message(
            topic=msg.topic,
            payload=payload,
            valid=False,
            device_id=msg.device_id,
            expected_reason=reason,
            faults=("malformed",),
            kind=msg.kind,
            format=msg.format,
            sent_at=msg.sent_at,
            readings=0,
            row_count=0,
        )

    def _emit(self, d: _Device, msgs: list[Message]) -> Iterator[Message]:
        """Per-message faults: malformed, out-of-order (held back once), duplicates."""
        r = self.rates
        for msg in msgs:
            if r.malformed and d.faults.rng.random() < r.malformed:
                self.stats.onsets["malformed"] += 1
                msg = self._malformed(d, msg)
            if d.held is None and r.out_of_order and d.faults.rng.random() < r.out_of_order:
                self.stats.onsets["out_of_order"] += 1
                d.held = _relabel(msg, "out_of_order")
                continue
            yield from self._count(msg)
            if d.held is not None:
                yield from self._count(d.held)
                d.held = None
            if msg.valid and r.duplicate and d.faults.rng.random() < r.duplicate:
                self.stats.onsets["duplicate"] += 1
                yield from self._count(_relabel(msg, "duplicate", rows=0))

    def _count(self, msg: Message) -> Iterator[Message]:
        st = self.stats
        st.messages += 1
        st.rows += msg.rows
        st.by_kind[msg.kind or "?"] += 1
        st.by_format[msg.format] += 1
        for f in msg.faults:
            st.faults[f] += 1
        yield msg

    def _flush(self, d: _Device, at: datetime) -> list[Message]:
        """A buffering device's late upload of everything it holds, sent at `at`."""
        all_applied = [a for _, _, ap in d.buffer for a in ap]
        samples = [s for _, s, _ in d.buffer]
        labels = [lb for _, s, ap in d.buffer for lb in _labels(s, ap)]
        d.buffer.clear()
        return self._messages_for(d, at, samples, all_applied, True, labels)

    def _end_silence(self, d: _Device, until: datetime) -> None:
        assert d.silent_since is not None
        self.silences.append(
            {
                "device_id": d.who.pipeline_id(d.fmt),
                "area": d.area.id,
                "from": iso(d.silent_since),
                "to": iso(until),
                "missed": d.missed,
            }
        )
        d.silent_since, d.missed = None, 0

    def messages(self) -> Iterator[Message]:
        """Every message of the run, in scenario-time order (ties by device order).

        As it plays, `silences` fills with each dropout: the device, the first reading
        time it lost and the time of its next reading (or the run's end)."""
        queue: list[tuple[datetime, int]] = []
        for i, d in enumerate(self.devices):
            # Devices report on whole seconds, staggered over their interval.
            local_id = d.who.device_id[len(self.id_prefix) :]
            fraction = random.Random(f"{self.seed}:{local_id}:offset").random()
            offset = timedelta(seconds=int(d.interval.total_seconds() * fraction))
            heapq.heappush(queue, (self.start + offset, i))
        while queue:
            t, i = heapq.heappop(queue)
            if t >= self.end:
                continue
            d = self.devices[i]
            heapq.heappush(queue, (t + d.interval, i))
            self.stats.scenario_time = t
            self.stats.readings += 1
            gate = d.faults.gate()
            if gate == "drop":
                self.stats.faults["dropout"] += 1
                if d.silent_since is None:
                    d.silent_since = t
                d.missed += 1
                continue
            if d.silent_since is not None:
                self._end_silence(d, t)
            sample, applied = self._sample(d, t)
            if gate == "buffer":
                d.buffer.append((t, sample, applied))
                continue
            if gate == "flush" and d.buffer:
                d.buffer.append((t, sample, applied))
                yield from self._emit(d, self._flush(d, t))
                continue
            yield from self._emit(
                d, self._messages_for(d, t, [sample], applied, False, _labels(sample, applied))
            )
        # The end: devices that were buffering upload what they hold; held messages go out.
        for d in self.devices:
            if d.silent_since is not None:
                self._end_silence(d, self.end)
            if d.buffer:
                yield from self._emit(d, self._flush(d, self.end))
            if d.held is not None:
                # Nothing newer came after it: it is merely the last message, not out of order.
                held = d.held
                d.held = None
                yield from self._count(_relabel(held, None))

    # -- what the scenario expects ------------------------------------------------------------
    def expectations(self) -> dict[str, Any]:
        """Which areas' modelled water levels cross which flood levels, and when.

        Crossings are read off the flood model's one-minute grid (the level every gauge of
        the area reports, before its ~1 cm of noise): `above` is the first minute at or
        over the level, `below` the first minute back under it. Also the areas where the
        noiseless PM2.5 and turbidity pass the default alert thresholds.
        """
        gauges: dict[str, list[str]] = {}
        for d in self.devices:
            if d.who.kind == "flood":
                gauges.setdefault(d.area.id, []).append(d.who.pipeline_id(d.fmt))
        flood = []
        for area in self.city.areas:
            series = self.env.flood.get(area.id)
            if series is None or area.flood is None:
                continue
            grid = [self.start + timedelta(minutes=i) for i in range(len(series.levels))]
            points = [(t, lv) for t, lv in zip(grid, series.levels, strict=True) if t <= self.end]
            crossings = []
            for name in FLOOD_LEVELS:
                threshold = area.flood.levels()[name]
                above = points[0][1] >= threshold
                for t, lv in points[1:]:
                    if not above and lv >= threshold:
                        crossings.append(
                            {
                                "level": name,
                                "threshold_m": threshold,
                                "direction": "above",
                                "time": iso(t),
                            }
                        )
                        above = True
                    elif above and lv < threshold:
                        crossings.append(
                            {
                                "level": name,
                                "threshold_m": threshold,
                                "direction": "below",
                                "time": iso(t),
                            }
                        )
                        above = False
            crossings.sort(key=lambda c: (c["time"], FLOOD_LEVELS.index(str(c["level"]))))
            peak_t, peak = max(points, key=lambda p: p[1])
            highest = [n for n in FLOOD_LEVELS if peak >= area.flood.levels()[n]]
            flood.append(
                {
                    "area": area.id,
                    "name": area.name,
                    "levels_m": area.flood.levels(),
                    "gauges": gauges.get(area.id, []),
                    "peak": {"time": iso(peak_t), "water_level_m": round(peak, 3)},
                    "highest_level": highest[-1] if highest else None,
                    "crossings": crossings,
                }
            )
        return {
            "scenario": self.scenario.name,
            "city": self.city.name,
            "seed": self.seed,
            "start": iso(self.start),
            "end": iso(self.end),
            "devices": len(self.devices),
            "fault_rates": self.rates.as_dict(),
            "flood": flood,
            "air_pm25_above_35_5": self._exceedances("air", "pm25_ugm3", 35.5),
            "air_pm25_above_55_5": self._exceedances("air", "pm25_ugm3", 55.5),
            "water_turbidity_above_50": self._exceedances("water", "turbidity_ntu", 50.0),
            "device_table": self.device_table(),
        }

    def _exceedances(self, kind: Kind, metric: str, threshold: float) -> list[dict[str, str]]:
        """Per area hosting `kind`: the first and last 5-minute instants the noiseless
        model is above `threshold` (areas that never are, left out)."""
        quiet = _ZeroNoise(0)
        out = []
        for area in self.city.areas:
            if not area.kinds.get(kind):
                continue
            times = []
            t = self.start
            while t < self.end:
                values = (
                    self.env.water(area, t, quiet, 0.0)
                    if kind == "water"
                    else self.env.air(area, t, quiet, 0.0)
                )
                if values[metric] > threshold:
                    times.append(t)
                t += timedelta(minutes=5)
            if times:
                out.append({"area": area.id, "first": iso(times[0]), "last": iso(times[-1])})
        return out


def _labels(sample: Sample, applied: list[tuple[str, str]]) -> list[Label]:
    """Each fault applied to one reading that names a metric, keyed as its row will be."""
    return [(sample.time, metric, fault) for fault, metric in applied if metric]


def _relabel(msg: Message, fault: str | None, rows: int | None = None) -> Message:
    """The message with `fault` put first among its faults (None: `out_of_order` removed)."""
    faults = (fault, *msg.faults) if fault else tuple(f for f in msg.faults if f != "out_of_order")
    return Message(
        topic=msg.topic,
        payload=msg.payload,
        valid=msg.valid,
        device_id=msg.device_id,
        expected_reason=msg.expected_reason,
        faults=faults,
        fault_metric=msg.fault_metric,
        kind=msg.kind,
        format=msg.format,
        sent_at=msg.sent_at,
        readings=msg.readings,
        row_count=msg.row_count if rows is None else rows,
        labels=msg.labels,
    )
