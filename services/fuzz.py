"""`citywatch fuzz`: generated payloads against `schemas.adapters.decode`, which must never raise.

The gateway treats an exception out of `decode` as a bug (it becomes a `decoder_error`
rejection and a logged traceback), so every payload, however hostile, must come back as
readings or a rejection with a reason and a detail. This command generates payloads of
every shape the gateway can meet, reproducibly from a seed:

- random bytes, and random JSON documents (deep nesting, huge integers, odd floats, text);
- valid native, SenML (RFC 8428 examples), The Things Stack and ChirpStack payloads, and
  mutations of them (members dropped, replaced by random JSON, bytes truncated or flipped);
- on every topic shape (native, SenML, TTN with and without tenant, ChirpStack, garbage),
  with and without a device registry, mappings (shipped, per device, unknown) and policies.

It prints progress, then counts per outcome (`readings` or the rejection reason), and exits
non-zero if any payload raised or produced a rejection without reason or detail. It uses its
own generator, not hypothesis, so it runs on an installation without the dev extras.
"""

from __future__ import annotations

import json
import random
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

from schemas.adapters import decode
from schemas.adapters.chirpstack import match_chirpstack
from schemas.adapters.ttn import match_ttn
from schemas.device import DeviceLookup, DeviceProfile, PayloadFormat, UnknownDevicePolicy
from schemas.reading import Rejection
from schemas.registry import COMMON, KINDS, METRICS

RECEIVED = datetime(2026, 11, 24, 10, 0, 5, tzinfo=UTC)
_SAMPLE_FAILURES = 5


def _topics(device: str) -> list[str]:
    return [
        *(f"citywatch/{kind}/{device}/up" for kind in KINDS),
        f"v3/city-app@ttn/devices/{device}/up",
        f"v3/city-app/devices/{device}/up",
        f"bridge/v3/city-app@ttn/devices/{device}/up",
        f"application/7d3c/device/{device}/event/up",
        "citywatch/sewer/dev-1/up",
        "citywatch/water/dev 1/up",
        "v3/app/devices//up",
        "application/a/device/b/event/down",
        "up",
        "",
    ]


# (topic family, kind, document): valid payloads that mutations start from.
_SEEDS: list[tuple[str, str, Any]] = [
    ("water", "water", {"time": "2026-11-24T10:00:00Z", "seq": 1, "metrics": {"ph": 7.2}}),
    ("air", "air", [{"metrics": {"pm25_ugm3": 12.0}, "battery_pct": 80}, {"metrics": {}}]),
    ("water", "water", [{"n": "temperature_c", "u": "K", "v": 296.1, "t": -60}]),
    (
        "air",
        "air",
        [
            {"bn": "urn:dev:ow:10e2073a01080063", "bt": 1.320067464e09, "bu": "%RH", "v": 20},
            {"u": "lon", "v": 24.30621},
            {"u": "lat", "v": 60.07965},
            {"t": 60, "v": 20.3},
            {"u": "%EL", "t": 150, "v": 98},
        ],
    ),
    (
        "water",
        "water",
        [
            {"bn": "urn:dev:ow:10e2073a01080063:", "n": "temp", "u": "Cel", "v": 23.1},
            {"n": "label", "vs": "Machine Room"},
            {"n": "open", "vb": False},
            {"n": "nfc-reader", "vd": "aGkgCg"},
        ],
    ),
    (
        "ttn",
        "flood",
        {
            "end_device_ids": {
                "device_id": "dev-1",
                "application_ids": {"application_id": "city-app"},
            },
            "received_at": "2020-02-12T15:15:46.014773143Z",
            "uplink_message": {
                "f_cnt": 1,
                "decoded_payload": {"water_level_m": 1.2, "rain_mm_h": 4.0},
                "rx_metadata": [{"rssi": -35, "snr": 5}],
                "received_at": "2020-02-12T15:15:45.789585559Z",
            },
        },
    ),
    (
        "chirpstack",
        "air",
        {
            "time": "2022-07-18T09:34:15.775023242+00:00",
            "deviceInfo": {"devEui": "0101010101010101", "applicationId": "7d3c"},
            "fCnt": 7,
            "rxInfo": [{"rssi": -36, "snr": 10.5}],
            "object": {"pm25": 10, "relativeHumidity": 0.5, "temperature": 30},
        },
    ),
]
_FAMILY_TOPIC = {
    "water": "citywatch/water/{device}/up",
    "air": "citywatch/air/{device}/up",
    "ttn": "v3/city-app@ttn/devices/{device}/up",
    "chirpstack": "application/7d3c/device/{device}/event/up",
}
_SCALARS: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**28,
    2**63,
    10**400,
    -(10**30),
    1e308,
    -1e308,
    5e-324,
    -0.0,
    1.320067464e09,
    "",
    "x",
    "NaN",
    "2026-11-24T10:00:00Z",
    "2026-11-24T10:00",
    *METRICS["water"],
    *METRICS["air"],
    *COMMON,
    "bn",
    "v",
    "t",
]


class PayloadGenerator:
    """Reproducible payloads: same seed, same sequence."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def scalar(self) -> Any:
        r = self.rng
        pick = r.random()
        if pick < 0.5:
            return r.choice(_SCALARS)
        if pick < 0.7:
            return r.uniform(-1e6, 1e6)
        if pick < 0.85:
            return r.randint(-(10**6), 10**6)
        return "".join(chr(r.randint(0, 0x2FFF)) for _ in range(r.randint(0, 12)))

    def value(self, depth: int = 0) -> Any:
        r = self.rng
        if depth >= 4 or r.random() < 0.45:
            return self.scalar()
        if r.random() < 0.5:
            return [self.value(depth + 1) for _ in range(r.randint(0, 5))]
        return {str(self.scalar()): self.value(depth + 1) for _ in range(r.randint(0, 5))}

    def mutate(self, doc: Any, depth: int = 0) -> Any:
        r = self.rng
        if isinstance(doc, dict) and doc:
            out = dict(doc)
            key = r.choice(list(out))
            action = r.randint(0, 3)
            if action == 0:
                del out[key]
            elif action == 1:
                out[key] = self.value()
            elif action == 2:
                out[str(self.scalar())] = self.value()
            else:
                out[key] = self.mutate(out[key], depth + 1)
            return out
        if isinstance(doc, list) and doc:
            out_list = list(doc)
            i = r.randrange(len(out_list))
            if r.random() < 0.3:
                del out_list[i]
            else:
                out_list[i] = self.mutate(out_list[i], depth + 1)
            return out_list
        return self.value() if r.random() < 0.7 else doc

    def case(self) -> tuple[str, bytes, str]:
        """(topic, payload, kind the payload was made for)."""
        r = self.rng
        device = self.device()
        topic = r.choice(_topics(device))
        shape = r.random()
        if shape < 0.15:
            return topic, r.randbytes(r.randint(0, 200)), r.choice(KINDS)
        if shape < 0.3:
            return topic, json.dumps(self.value(), ensure_ascii=r.random() < 0.5).encode(), "air"
        family, kind, doc = r.choice(_SEEDS)
        if r.random() < 0.7:
            topic = _FAMILY_TOPIC[family].format(device=device)
        for _ in range(r.choice([0, 0, 1, 1, 2, 3])):
            doc = self.mutate(doc)
        text = json.dumps(doc).encode()
        if shape > 0.95 and text:
            cut = r.randrange(len(text))
            text = text[:cut] if r.random() < 0.5 else text[:cut] + bytes([r.randrange(256)])
        return topic, text, kind

    def device(self) -> str:
        return self.rng.choice(["dev-1"] * 4 + ["0101010101010101", "buoy.7", "x" * 129, "d:1"])

    def lookup(
        self, kind: str, fmt: PayloadFormat = "native"
    ) -> tuple[DeviceLookup | None, UnknownDevicePolicy]:
        r = self.rng
        choice = r.randint(0, 4)
        if choice == 0:
            return None, "accept"
        mapping: dict[str, str] | str | None = r.choice(
            [
                None,
                None,
                None,
                "fiware-air-quality",
                "fiware-water-quality",
                "fiware-flood",
                "no-such-mapping",
                {"temp": "temperature_c", "waterLevel": "water_level_m@cm", "x": "-"},
                {"urn:dev:ow:10e2073a01080063": "humidity_pct", "bad": "nonsense"},
            ]
        )
        profile = DeviceProfile(
            device_id="dev-1",
            kind=kind if kind in KINDS and r.random() < 0.7 else r.choice(KINDS),
            # Mostly the topic's own format, so decoding gets past the format check.
            payload_format=fmt if r.random() < 0.8 else r.choice(get_args(PayloadFormat)),
            field_mapping=mapping,
            calibration=r.choice([{}, {"ph": 0.1}, {"temperature_c": -100.0}]),
            status="active" if r.random() < 0.8 else r.choice(["disabled", "unprovisioned"]),
        )

        def lookup(device_id: str) -> DeviceProfile | None:
            return profile.model_copy(update={"device_id": device_id}) if choice < 4 else None

        return lookup, r.choice(["accept", "reject"])


def run_fuzz(count: int, seed: int, *, progress: Callable[[str], None] | None = None) -> int:
    """Decode `count` generated payloads; 0 when none raised and every rejection has a reason."""
    say = progress or (lambda line: print(line, flush=True))
    gen = PayloadGenerator(seed)
    outcomes: Counter[str] = Counter()
    failures: list[str] = []
    started = time.monotonic()
    step = max(count // 10, 1)
    say(f"fuzzing decode() with {count:,} payloads, seed {seed}")
    for i in range(1, count + 1):
        topic, payload, kind = gen.case()
        fmt: PayloadFormat = (
            "ttn" if match_ttn(topic) else "chirpstack" if match_chirpstack(topic) else "native"
        )
        lookup, policy = gen.lookup(kind, fmt)
        received = RECEIVED + timedelta(seconds=gen.rng.randint(-(10**9), 10**9))
        try:
            result = decode(topic, payload, received, lookup=lookup, unknown=policy)
        except Exception as exc:  # noqa: BLE001 - any escape is exactly what we look for
            outcomes["EXCEPTION"] += 1
            if len(failures) < _SAMPLE_FAILURES:
                failures.append(
                    f"{type(exc).__name__}: {exc}\n  topic={topic!r}\n  payload={payload[:300]!r}\n"
                    + "".join(traceback.format_exception(exc)[-3:])
                )
            continue
        if isinstance(result, Rejection):
            if not result.reason or not result.detail:
                outcomes["EMPTY_REASON"] += 1
                if len(failures) < _SAMPLE_FAILURES:
                    failures.append(f"rejection without reason/detail: {result!r}")
            else:
                outcomes[f"rejected:{result.reason}"] += 1
        else:
            outcomes["readings"] += 1
        if i % step == 0 or i == count:
            elapsed = time.monotonic() - started
            rate = i / max(elapsed, 1e-9)
            say(f"  {i:>10,} / {count:,}  {rate:>9,.0f}/s  problems: {len(failures)}")
    say("outcomes:")
    for outcome, n in sorted(outcomes.items(), key=lambda kv: (-kv[1], kv[0])):
        say(f"  {outcome:<34} {n:>10,}")
    bad = outcomes["EXCEPTION"] + outcomes["EMPTY_REASON"]
    if bad:
        say(f"FAILED: {bad} payload(s) raised or were rejected without a reason; first ones:")
        for failure in failures:
            say(failure)
        return 1
    say(f"ok: {count:,} payloads, no exception, every rejection has a reason and a detail")
    return 0


if __name__ == "__main__":
    sys.exit(run_fuzz(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000, 1))
