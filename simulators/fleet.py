"""A simulated city: devices of each kind producing plausible native payloads, from a seed.

Pure generation, no I/O: `Fleet.next_message()` returns the topic, the payload bytes and
whether the payload is meant to be valid, so tests and benchmarks know exactly how many
readings and rejections to expect.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice

from schemas.registry import KINDS, Kind
from schemas.topics import uplink_topic

# Baseline and daily swing per metric: the values a healthy sensor in Sihanoukville reports.
_PROFILES: dict[Kind, dict[str, tuple[float, float, float, float]]] = {
    # metric: (baseline, daily amplitude, noise, hard floor)
    "water": {
        "ph": (7.6, 0.2, 0.05, 0),
        "turbidity_ntu": (6.0, 2.0, 0.8, 0),
        "dissolved_oxygen_mgl": (6.8, 1.2, 0.2, 0),
        "conductivity_uscm": (450.0, 40.0, 10.0, 0),
        "temperature_c": (29.0, 1.5, 0.2, 0),
    },
    "air": {
        "pm25_ugm3": (22.0, 10.0, 3.0, 0),
        "pm10_ugm3": (40.0, 15.0, 5.0, 0),
        "no2_ppb": (14.0, 8.0, 2.0, 0),
        "o3_ppb": (28.0, 12.0, 3.0, 0),
        "co_ppm": (0.5, 0.3, 0.05, 0),
        "temperature_c": (30.0, 4.0, 0.4, 0),
        "humidity_pct": (75.0, 12.0, 2.0, 0),
    },
    "flood": {
        "water_level_m": (1.2, 0.4, 0.02, 0),  # tide-driven swing
        "rain_mm_h": (0.5, 0.5, 0.8, 0),
        "flow_m3s": (35.0, 8.0, 2.0, 0),
    },
    "litter": {
        "fill_level_pct": (20.0, 5.0, 1.0, 0),
        "litter_kg": (12.0, 4.0, 1.0, 0),
    },
}

# What an episode adds at its peak, enough to cross the default alert rules.
_EPISODE: dict[Kind, dict[str, float]] = {
    "flood": {"water_level_m": 2.2, "rain_mm_h": 40.0, "flow_m3s": 120.0},
    "air": {"pm25_ugm3": 70.0, "pm10_ugm3": 90.0},
    "water": {"turbidity_ntu": 90.0},
}

# Malformed payloads of the kinds devices really send, each with the reason it must get.
MALFORMED: list[tuple[str, Callable[[Kind, str], bytes]]] = [
    ("not_json", lambda _k, _d: b"{not json"),
    ("not_utf8", lambda _k, _d: b"\xff\xfe\x00garbage"),
    (
        "wrong_type",
        lambda k, _d: json.dumps({"metrics": {next(iter(_PROFILES[k])): "high"}}).encode(),
    ),
    ("unknown_metric", lambda _k, _d: json.dumps({"metrics": {"radiation_usv": 0.1}}).encode()),
    ("out_of_range", lambda _k, _d: json.dumps({"metrics": {"battery_pct": 140}}).encode()),
    (
        "time_without_zone",
        lambda k, _d: json.dumps(
            {"time": "2026-11-24T10:00:00", "metrics": {next(iter(_PROFILES[k])): 1.0}}
        ).encode(),
    ),
    (
        "device_mismatch",
        lambda k, _d: json.dumps(
            {"device_id": "someone-else", "metrics": {next(iter(_PROFILES[k])): 1.0}}
        ).encode(),
    ),
]


@dataclass
class Device:
    device_id: str
    kind: Kind
    lat: float
    lon: float
    phase: float
    seq: int = 0
    litter_items: int = 0
    drift: dict[str, float] = field(default_factory=dict)


Label = tuple[datetime, str, str]  # (reading time, metric, fault)


@dataclass(frozen=True)
class Message:
    """One MQTT message a simulated device publishes, and what must become of it.

    `valid` and `expected_reason` say whether the gateway must accept it or reject it
    with that reason; `faults` names every fault injected into it (empty for a healthy
    message, the first being the one that decides its fate), `fault_metric` the metric a
    value fault (spike, stuck, drift) touched. `row_count` is set by scenario runs: the
    new rows the message must add (0 for a duplicate, whose rows already exist).
    `labels` (scenario runs) names every fault per reading: (reading time as the device
    stamps it, metric, fault), the key a stored row has, so each flag can be scored.
    """

    topic: str
    payload: bytes
    valid: bool
    device_id: str
    expected_reason: str | None = None
    faults: tuple[str, ...] = ()
    fault_metric: str | None = None
    kind: Kind | None = None
    format: str = "native"
    sent_at: datetime | None = None  # scenario time at which the device sends it
    readings: int = 1  # instants it carries (more than one for a buffered upload)
    row_count: int | None = None
    labels: tuple[Label, ...] = ()

    @property
    def fault(self) -> str | None:
        """The fault that decides this message's fate, or None for a healthy message."""
        return self.faults[0] if self.faults else None

    @property
    def rows(self) -> int:
        """How many `readings` rows this message must become (one per metric), 0 if malformed."""
        if not self.valid:
            return 0
        if self.row_count is not None:
            return self.row_count
        body = json.loads(self.payload)
        items = body if isinstance(body, list) else [body]
        return sum(len(item["metrics"]) for item in items)


class Fleet:
    """`per_kind` devices of each kind around Sihanoukville, deterministic for a seed."""

    # Sihanoukville city centre; devices are scattered within ~8 km.
    CENTRE = (10.627, 103.522)

    def __init__(
        self,
        *,
        per_kind: int,
        seed: int = 1,
        prefix: str = "citywatch",
        malformed_share: float = 0.0,
        kinds: tuple[Kind, ...] = KINDS,
        id_prefix: str = "",
        episodes: bool = False,
        values_per_reading: int = 0,
    ) -> None:
        if not 0 <= malformed_share <= 1:
            raise ValueError("malformed_share must be between 0 and 1")
        if values_per_reading < 0:
            raise ValueError("values_per_reading must be 0 (all of a kind's metrics) or more")
        # 0: every metric of the device's kind (5.5 values per reading over the four kinds);
        # N: the first N of them (the bench's readings match issue 11's "3 values").
        self.values_per_reading = values_per_reading
        self.rng = random.Random(seed)
        self.prefix = prefix
        self.malformed_share = malformed_share
        self.episodes = episodes
        self.devices = [
            Device(
                device_id=f"{id_prefix}{kind}-{i:04d}",
                kind=kind,
                lat=round(self.CENTRE[0] + self.rng.uniform(-0.07, 0.07), 5),
                lon=round(self.CENTRE[1] + self.rng.uniform(-0.07, 0.07), 5),
                phase=self.rng.uniform(0, 2 * math.pi),
            )
            for kind in kinds
            for i in range(per_kind)
        ]
        self._next = 0

    def messages(self, start: datetime | None = None, step_ms: float = 0) -> Iterator[Message]:
        """An endless stream of messages. With `start` and `step_ms`, reading times are
        `start + i * step_ms` (distinct and reproducible); otherwise the wall clock."""
        i = 0
        while True:
            now = start + timedelta(milliseconds=i * step_ms) if start is not None else None
            yield self.next_message(now)
            i += 1

    def next_message(self, now: datetime | None = None) -> Message:
        """The next device's next payload, round-robin over the fleet."""
        device = self.devices[self._next % len(self.devices)]
        self._next += 1
        topic = uplink_topic(self.prefix, device.kind, device.device_id)
        if self.malformed_share and self.rng.random() < self.malformed_share:
            reason, make = self.rng.choice(MALFORMED)
            return Message(
                topic,
                make(device.kind, device.device_id),
                False,
                device.device_id,
                reason,
                faults=("malformed",),
                kind=device.kind,
                readings=0,
            )
        return Message(
            topic,
            self.payload(device, now or datetime.now(UTC)),
            True,
            device.device_id,
            kind=device.kind,
        )

    def payload(self, device: Device, now: datetime) -> bytes:
        device.seq += 1
        metrics = self.values(device, now)
        body = {
            "time": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "seq": device.seq,
            "metrics": metrics,
            "lat": device.lat,
            "lon": device.lon,
        }
        return json.dumps(body, separators=(",", ":")).encode()

    def values(self, device: Device, now: datetime) -> dict[str, float]:
        hours = now.hour + now.minute / 60
        daily = math.sin(2 * math.pi * hours / 24 + device.phase)
        out: dict[str, float] = {}
        for metric, (base, amp, noise, floor) in _PROFILES[device.kind].items():
            value = base + amp * daily + self.rng.gauss(0, noise)
            out[metric] = round(max(floor, value), 3)
        if self.episodes and device.device_id.endswith("-0000"):
            # The first device of each kind lives through an episode every ten minutes (a
            # storm surge, a haze, a turbid intake, a litter wave) so a demo shows alerts
            # firing and resolving within minutes.
            surge = max(0.0, math.sin(2 * math.pi * (now.timestamp() % 600) / 600))
            for metric, extra in _EPISODE.get(device.kind, {}).items():
                out[metric] = round(out[metric] + surge * extra, 3)
        if device.kind == "air":
            out["pm10_ugm3"] = max(out["pm10_ugm3"], out["pm25_ugm3"])  # PM10 includes PM2.5
        if device.kind == "litter":
            device.litter_items += self.rng.randint(0, 3)
            if self.episodes and device.device_id.endswith("-0000"):
                device.litter_items += 8
            if device.litter_items > 600 and self.rng.random() < 0.05:
                device.litter_items = 0  # a collection crew emptied the boom
            out["litter_items"] = float(device.litter_items)
        out["battery_pct"] = round(max(5.0, 95 - device.seq * 0.001), 2)
        if self.values_per_reading:
            out = dict(islice(out.items(), self.values_per_reading))
        return out
