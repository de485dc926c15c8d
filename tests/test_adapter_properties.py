"""Property tests: whatever arrives on whatever topic, `decode` returns readings or a rejection
with a reason and a detail; it never raises (an exception would be a poison message for the
gateway). Hypothesis generates the payloads; the `fuzz` variants run far more of them, and
`services.fuzz` (the `citywatch fuzz` command) is run here too."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import Reading, Rejection
from schemas.adapters import SHIPPED_MAPPINGS, decode
from schemas.adapters.senml import SENML_LABELS
from schemas.device import DeviceLookup, DeviceProfile
from schemas.registry import COMMON, KINDS, METRICS
from services.fuzz import run_fuzz

EXAMPLES = 300
FUZZ_EXAMPLES = int(os.environ.get("CITYWATCH_FUZZ_EXAMPLES", "5000"))
RECEIVED = datetime(2026, 11, 24, 10, 0, 5, tzinfo=UTC)

# -- strategies ---------------------------------------------------------------------------

device_ids = st.one_of(
    st.sampled_from(["dev-1", "0101010101010101", "buoy.7", "a:b", "x" * 129, "", "a b", "é"]),
    st.text(min_size=0, max_size=12),
)
topic_kinds = st.one_of(st.sampled_from([*KINDS, "sewer", "", "+"]), st.text(max_size=6))


@st.composite
def topics(draw: st.DrawFn) -> str:
    device = draw(device_ids)
    shape = draw(st.integers(0, 6))
    if shape == 0:
        return f"citywatch/{draw(topic_kinds)}/{device}/up"
    if shape == 1:
        return f"v3/{draw(st.text(max_size=8))}@ttn/devices/{device}/up"
    if shape == 2:
        return f"v3/app/devices/{device}/up"
    if shape == 3:
        return f"application/{draw(st.text(max_size=8))}/device/{device}/event/up"
    if shape == 4:
        return f"{draw(st.text(max_size=10))}/{draw(topic_kinds)}/{device}/up"
    return draw(st.text(max_size=40))


names = st.one_of(
    st.sampled_from(
        [*METRICS["water"], *METRICS["air"], *METRICS["flood"], *COMMON, "time", "lat", "lon"]
    ),
    st.sampled_from(sorted({k for m in SHIPPED_MAPPINGS.values() for k in m})),
    st.sampled_from(sorted(SENML_LABELS)),
    st.text(max_size=8),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([2**28, 2**28 - 1, 1.320067464e09, -0.0, 1e308, 10**400]),
    st.text(max_size=20),
    st.sampled_from(["2026-11-24T10:00:00Z", "2026-11-24T10:00", "Cel", "%RH", "S/m", "/"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(names, inner, max_size=6)),
    max_leaves=30,
)
senml_packs = st.lists(st.dictionaries(st.sampled_from(sorted(SENML_LABELS)), scalars), max_size=8)
ttn_uplinks = st.fixed_dictionaries(
    {
        "uplink_message": st.one_of(
            json_values,
            st.fixed_dictionaries(
                {"decoded_payload": st.dictionaries(names, json_values, max_size=6)},
                optional={
                    "rx_metadata": json_values,
                    "f_cnt": scalars,
                    "locations": json_values,
                    "received_at": scalars,
                },
            ),
        )
    },
    optional={"end_device_ids": json_values, "received_at": scalars},
)
chirpstack_events = st.fixed_dictionaries(
    {"object": st.dictionaries(names, json_values, max_size=6)},
    optional={"deviceInfo": json_values, "time": scalars, "fCnt": scalars, "rxInfo": json_values},
)
json_payloads = st.one_of(json_values, senml_packs, ttn_uplinks, chirpstack_events).map(
    lambda doc: json.dumps(doc).encode()
)


@st.composite
def lookups(draw: st.DrawFn) -> tuple[DeviceLookup | None, str]:
    if draw(st.booleans()):
        return None, "accept"
    mapping = draw(
        st.one_of(
            st.none(),
            st.sampled_from([*SHIPPED_MAPPINGS, "no-such-mapping"]),
            st.dictionaries(names, st.one_of(names, st.just("-"), st.just("ph@Cel")), max_size=4),
        )
    )
    profile = DeviceProfile(
        device_id="dev-1",
        kind=draw(st.sampled_from(KINDS)),
        field_mapping=mapping,
        calibration=draw(st.sampled_from([{}, {"ph": 0.5}, {"rssi_dbm": -500.0}])),
        status=draw(st.sampled_from(["active", "disabled", "unprovisioned"])),
    )
    registered = draw(st.booleans())

    def lookup(device_id: str) -> DeviceProfile | None:
        return profile.model_copy(update={"device_id": device_id}) if registered else None

    return lookup, draw(st.sampled_from(["accept", "reject"]))


# -- the property ----------------------------------------------------------------------------


def _assert_total(topic: str, payload: bytes, lookup: tuple[DeviceLookup | None, str]) -> None:
    registry, policy = lookup
    received = RECEIVED + timedelta(seconds=1)
    result = decode(topic, payload, received, lookup=registry, unknown=policy)  # type: ignore[arg-type]
    if isinstance(result, Rejection):
        assert result.reason, result
        assert result.detail, result
        assert result.raw == payload
        assert result.topic == topic
        return
    assert result, "an accepted payload must yield at least one reading"
    for reading in result:
        assert isinstance(reading, Reading)
        assert reading.metrics
        assert all(math.isfinite(v) for v in reading.metrics.values())
        assert reading.time.utcoffset() == timedelta(0)
        assert reading.received_at == received


def _property(payloads: st.SearchStrategy[bytes], examples: int) -> Callable[..., None]:
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(topic=topics(), payload=payloads, lookup=lookups())
    def check(topic: str, payload: bytes, lookup: tuple[DeviceLookup | None, str]) -> None:
        _assert_total(topic, payload, lookup)

    return check


test_arbitrary_bytes_on_every_topic_never_raise_out_of_decode = _property(st.binary(), EXAMPLES)
test_arbitrary_json_on_every_topic_never_raises_out_of_decode = _property(json_payloads, EXAMPLES)
test_fuzz_arbitrary_bytes_never_raise_out_of_decode = pytest.mark.fuzz(
    _property(st.binary(max_size=4096), FUZZ_EXAMPLES)
)
test_fuzz_arbitrary_json_never_raises_out_of_decode = pytest.mark.fuzz(
    _property(json_payloads, FUZZ_EXAMPLES)
)


@given(payload=st.binary(max_size=64))
@settings(max_examples=EXAMPLES, deadline=None, database=None)
def test_payload_over_the_limit_is_rejected_before_any_adapter_reads_it(payload: bytes) -> None:
    for topic in ("citywatch/water/d/up", "v3/a/devices/d/up", "application/a/device/d/event/up"):
        result = decode(topic, payload + b"x", RECEIVED, max_bytes=len(payload))
        assert isinstance(result, Rejection)
        assert result.reason == "payload_too_large"


# -- the fuzz command -------------------------------------------------------------------------


def test_fuzz_command_reports_every_outcome_and_succeeds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run_fuzz(3_000, seed=7) == 0
    out = capsys.readouterr().out
    assert "3,000 / 3,000" in out
    assert "readings" in out
    assert "rejected:not_json" in out
    assert "ok: 3,000 payloads" in out


def test_fuzz_command_is_reproducible_from_its_seed() -> None:
    lines: list[list[str]] = [[], []]
    for i in range(2):
        run_fuzz(500, seed=11, progress=lines[i].append)
    summary = [[line for line in run if "/s" not in line] for run in lines]
    assert summary[0] == summary[1]


@pytest.mark.fuzz
def test_fuzz_command_with_100_000_payloads_finds_no_exception() -> None:
    out: list[str] = []
    assert run_fuzz(100_000, seed=1, progress=out.append) == 0, "\n".join(out)
