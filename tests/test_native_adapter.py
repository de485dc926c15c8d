"""Unit tests for the native JSON adapter, the canonical models and the metric registry.

`TestNativeAdapter` inherits `AdapterContract` (tests/adapter_contract.py), what every
payload adapter must do. No broker, no database.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from schemas import METRICS, Reading, RejectedRecord, Rejection
from schemas.adapters import (
    DEFAULT_MAX_AGE,
    DEFAULT_MAX_PAYLOAD_BYTES,
    DEFAULT_MAX_SPREAD,
    decode,
    decode_native,
)
from schemas.device import DeviceProfile
from schemas.reading import MAX_DETAIL_CHARS
from schemas.registry import COMMON
from schemas.topics import is_device_id
from services.common.settings import IngestSettings
from tests.adapter_contract import RECEIVED, AdapterContract, _readings, _rejected

TOPIC = "citywatch/water/dev-1/up"


def _json(body: Any) -> bytes:
    return json.dumps(body).encode()


class TestNativeAdapter(AdapterContract):
    source = "native"
    valid_topic = TOPIC
    valid_payload = _json(
        {"time": "2026-11-24T10:00:00Z", "seq": 42, "metrics": {"ph": 7.2, "turbidity_ntu": 3.1}}
    )
    expected_rows = 1

    def decode(
        self,
        topic: str,
        payload: bytes,
        received_at: datetime,
        max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    ) -> list[Reading] | Rejection:
        return decode_native(topic, payload, received_at, max_bytes=max_bytes)

    # -- helpers ---------------------------------------------------------------------------

    def one(self, body: Any, topic: str = TOPIC) -> Reading:
        readings = _readings(self.decode(topic, _json(body), RECEIVED))
        assert len(readings) == 1
        return readings[0]

    def decode_or_fail(self, topic: str, payload: bytes) -> list[Reading] | Rejection:
        """Decode, turning an escaping exception into a test failure that names it."""
        try:
            return self.decode(topic, payload, RECEIVED)
        except (ValueError, OverflowError, RecursionError) as exc:
            pytest.fail(f"decode_native raised {type(exc).__name__} instead of rejecting: {exc}")

    def reject(self, body: Any, topic: str = TOPIC) -> Rejection:
        payload = body if isinstance(body, bytes) else _json(body)
        rej = _rejected(self.decode(topic, payload, RECEIVED))
        self._assert_kept(rej, topic, payload)
        return rej

    # -- shapes ----------------------------------------------------------------------------

    def test_single_object_yields_one_reading_with_topic_identity(self) -> None:
        r = self.one({"time": "2026-11-24T10:00:00Z", "seq": 42, "metrics": {"ph": 7.2}})
        assert r.device_id == "dev-1"
        assert r.kind == "water"
        assert r.seq == 42
        assert r.metrics == {"ph": 7.2}
        assert r.time == datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
        assert r.time_from_gateway is False

    def test_list_yields_one_reading_per_element_in_order(self) -> None:
        body = [
            {"time": "2026-11-24T10:00:00Z", "seq": 1, "metrics": {"ph": 7.0}},
            {"time": "2026-11-24T10:01:00Z", "seq": 2, "metrics": {"ph": 7.1}},
        ]
        readings = _readings(self.decode(TOPIC, _json(body), RECEIVED))
        assert [r.seq for r in readings] == [1, 2]
        assert [r.metrics["ph"] for r in readings] == [7.0, 7.1]

    def test_empty_list_is_rejected_as_empty(self) -> None:
        assert self.reject([]).reason == "empty"

    def test_list_with_one_bad_element_is_rejected_whole_naming_its_index(self) -> None:
        body = [{"metrics": {"ph": 7.0}}, {"metrics": {"ph": 7.1}}, {"metrics": {"ph": 19}}]
        rej = self.reject(body)
        assert rej.reason == "out_of_range"
        assert rej.detail.startswith("reading 2: ")

    def test_single_object_rejection_detail_has_no_index_prefix(self) -> None:
        rej = self.reject({"metrics": {"ph": 19}})
        assert not rej.detail.startswith("reading ")

    def test_unknown_top_level_field_is_invalid_structure(self) -> None:
        rej = self.reject({"metrics": {"ph": 7.0}, "firmware": "1.2"})
        assert rej.reason == "invalid_structure"
        assert "firmware" in rej.detail

    def test_non_object_element_is_invalid_structure(self) -> None:
        assert self.reject([42]).reason == "invalid_structure"

    def test_missing_or_empty_metrics_is_no_metrics(self) -> None:
        assert self.reject({"time": "2026-11-24T10:00:00Z"}).reason == "no_metrics"
        assert self.reject({"metrics": {}}).reason == "no_metrics"

    # -- time ------------------------------------------------------------------------------

    def test_epoch_seconds_time_is_read_as_utc(self) -> None:
        r = self.one({"time": 1_795_000_000, "metrics": {"ph": 7.0}})
        assert r.time == datetime.fromtimestamp(1_795_000_000, UTC)
        assert r.time.utcoffset() == timedelta(0)
        assert r.time_from_gateway is False

    def test_fractional_epoch_seconds_keep_the_fraction(self) -> None:
        r = self.one({"time": 1_795_000_000.25, "metrics": {"ph": 7.0}})
        assert r.time.microsecond == 250_000

    def test_missing_time_uses_receive_time_and_flags_it(self) -> None:
        r = self.one({"metrics": {"ph": 7.0}})
        assert r.time == RECEIVED
        assert r.time_from_gateway is True

    def test_time_with_offset_is_converted_to_utc(self) -> None:
        r = self.one({"time": "2026-11-24T17:00:00+07:00", "metrics": {"ph": 7.0}})
        assert r.time == datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
        assert r.time.utcoffset() == timedelta(0)
        assert r.time.hour == 10

    def test_time_without_zone_is_rejected(self) -> None:
        rej = self.reject({"time": "2026-11-24T10:00:00", "metrics": {"ph": 7.0}})
        assert rej.reason == "time_without_zone"

    def test_unparseable_or_non_text_time_is_bad_time(self) -> None:
        assert self.reject({"time": "yesterday", "metrics": {"ph": 7}}).reason == "bad_time"
        assert self.reject({"time": True, "metrics": {"ph": 7}}).reason == "bad_time"
        assert self.reject({"time": 1e20, "metrics": {"ph": 7}}).reason == "bad_time"

    def test_receive_time_with_offset_is_stored_as_utc(self) -> None:
        received = datetime(2026, 11, 24, 17, 0, 5, tzinfo=timezone(timedelta(hours=7)))
        readings = _readings(self.decode(TOPIC, _json({"metrics": {"ph": 7.0}}), received))
        assert readings[0].received_at.utcoffset() == timedelta(0)
        assert readings[0].received_at == RECEIVED

    # -- values ----------------------------------------------------------------------------

    @pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
    def test_nan_and_infinity_are_not_finite(self, constant: str) -> None:
        payload = b'{"metrics": {"ph": ' + constant.encode() + b"}}"
        assert self.reject(payload).reason == "not_finite"

    def test_number_overflowing_to_infinity_is_not_finite(self) -> None:
        assert self.reject(b'{"metrics": {"ph": 1e999}}').reason == "not_finite"

    @pytest.mark.parametrize("value", [True, False, "7.2", None, [7.2], {"v": 7.2}])
    def test_non_number_metric_value_is_wrong_type(self, value: Any) -> None:
        assert self.reject({"metrics": {"ph": value}}).reason == "wrong_type"

    def test_unknown_metric_is_rejected(self) -> None:
        rej = self.reject({"metrics": {"radiation_usv": 0.1}})
        assert rej.reason == "unknown_metric"
        assert "radiation_usv" in rej.detail

    def test_metric_of_another_kind_is_unknown_metric(self) -> None:
        assert self.reject({"metrics": {"pm25_ugm3": 10}}).reason == "unknown_metric"

    def test_value_outside_registry_range_is_out_of_range_with_range_in_detail(self) -> None:
        rej = self.reject({"metrics": {"ph": 19}})
        assert rej.reason == "out_of_range"
        assert "[0, 14]" in rej.detail
        assert "19" in rej.detail

    def test_registry_range_bounds_are_inclusive(self) -> None:
        assert self.one({"metrics": {"ph": 0, "turbidity_ntu": 4000}}).metrics == {
            "ph": 0.0,
            "turbidity_ntu": 4000.0,
        }
        assert self.reject({"metrics": {"ph": -0.001}}).reason == "out_of_range"

    def test_integer_values_become_floats(self) -> None:
        value = self.one({"metrics": {"ph": 7}}).metrics["ph"]
        assert value == 7.0
        assert isinstance(value, float)

    def test_battery_and_rssi_beside_metrics_are_merged_in(self) -> None:
        r = self.one({"metrics": {"ph": 7.0}, "battery_pct": 88, "rssi_dbm": -97})
        assert r.metrics == {"ph": 7.0, "battery_pct": 88.0, "rssi_dbm": -97.0}

    def test_battery_beside_metrics_is_range_checked(self) -> None:
        assert self.reject({"metrics": {"ph": 7.0}, "battery_pct": 140}).reason == "out_of_range"

    # -- identity --------------------------------------------------------------------------

    def test_device_id_and_kind_in_payload_that_agree_are_accepted(self) -> None:
        r = self.one({"device_id": "dev-1", "kind": "water", "metrics": {"ph": 7.0}})
        assert (r.device_id, r.kind) == ("dev-1", "water")

    def test_device_id_disagreeing_with_topic_is_device_mismatch(self) -> None:
        rej = self.reject({"device_id": "someone-else", "metrics": {"ph": 7.0}})
        assert rej.reason == "device_mismatch"

    def test_kind_disagreeing_with_topic_is_kind_mismatch(self) -> None:
        assert self.reject({"kind": "air", "metrics": {"ph": 7.0}}).reason == "kind_mismatch"

    # -- topics ----------------------------------------------------------------------------

    def test_unknown_kind_in_topic_is_rejected(self) -> None:
        rej = self.reject({"metrics": {"ph": 7.0}}, topic="citywatch/sewer/dev-1/up")
        assert rej.reason == "unknown_kind"

    @pytest.mark.parametrize(
        "topic",
        ["citywatch/water//up", "citywatch/water/dev-1/down", "citywatch/water/dev-1", "up"],
    )
    def test_malformed_topic_is_bad_topic(self, topic: str) -> None:
        assert self.reject({"metrics": {"ph": 7.0}}, topic=topic).reason == "bad_topic"

    @pytest.mark.parametrize(
        "topic", ["tabc/water/dev-1/up", "water/dev-1/up", "a/b/c/water/dev-1/up"]
    )
    def test_any_topic_prefix_is_accepted(self, topic: str) -> None:
        r = self.one({"metrics": {"ph": 7.0}}, topic=topic)
        assert (r.kind, r.device_id) == ("water", "dev-1")

    # -- hostile input must become a Rejection, never an exception ---------------------------
    # These pin down bugs: each one currently raises out of decode_native, which in the
    # ingest gateway's _dispatch (unguarded) kills the consume loop, and the unacked
    # message is redelivered after restart: a poison message.

    @pytest.mark.parametrize(
        "device_id", ["dev 1", "dév-1", "d" * 129], ids=["space", "non_ascii", "129_chars"]
    )
    def test_topic_device_id_invalid_for_reading_is_rejected_not_raised(
        self, device_id: str
    ) -> None:
        topic = f"citywatch/water/{device_id}/up"
        payload = _json({"metrics": {"ph": 7.0}})
        # today: pydantic ValidationError
        result = self.decode_or_fail(topic, payload)
        assert _rejected(result).reason == "bad_topic"

    def test_huge_integer_metric_is_rejected_not_raised(self) -> None:
        payload = b'{"metrics": {"ph": 1' + b"0" * 400 + b"}}"
        # today: OverflowError from float(value)
        result = self.decode_or_fail(TOPIC, payload)
        assert _rejected(result).reason == "out_of_range"

    def test_integer_longer_than_python_digit_limit_is_rejected_not_raised(self) -> None:
        payload = b'{"metrics": {"ph": ' + b"1" * 5000 + b"}}"
        # today: ValueError (int max_str_digits limit) from json.loads
        result = self.decode_or_fail(TOPIC, payload)
        assert isinstance(result, Rejection)

    @pytest.mark.parametrize("time", ["0001-01-01T00:00:00+07:00", "9999-12-31T23:59:59-01:00"])
    def test_time_whose_utc_form_overflows_is_bad_time_not_raised(self, time: str) -> None:
        payload = _json({"time": time, "metrics": {"ph": 7.0}})
        # today: OverflowError from astimezone(UTC)
        result = self.decode_or_fail(TOPIC, payload)
        assert _rejected(result).reason == "bad_time"

    def test_deeply_nested_json_under_size_limit_is_rejected_not_raised(self) -> None:
        payload = b"[" * 100_000
        assert len(payload) < DEFAULT_MAX_PAYLOAD_BYTES
        # today: RecursionError from json.loads
        result = self.decode_or_fail(TOPIC, payload)
        assert _rejected(result).reason in {"not_json", "invalid_structure"}


# -- canonical models on Kafka ------------------------------------------------------------


def test_reading_round_trips_through_kafka_bytes() -> None:
    reading = Reading(
        device_id="dev-1",
        kind="water",
        time=datetime(2026, 11, 24, 17, 0, 0, 123456, tzinfo=timezone(timedelta(hours=7))),
        received_at=RECEIVED,
        metrics={"ph": 7.2, "turbidity_ntu": 0.1, "battery_pct": 88.0},
        seq=42,
        time_from_gateway=False,
        lat=10.627,
        lon=103.522,
        source="native",
    )
    back = Reading.from_kafka(reading.to_kafka())
    assert back == reading
    assert back.time == datetime(2026, 11, 24, 10, 0, 0, 123456, tzinfo=UTC)
    assert back.metrics == reading.metrics


def test_decoded_reading_round_trips_through_kafka_bytes() -> None:
    readings = _readings(decode_native(TOPIC, _json({"metrics": {"ph": 7.0}}), RECEIVED))
    assert Reading.from_kafka(readings[0].to_kafka()) == readings[0]


def test_reading_requires_a_time_zone() -> None:
    with pytest.raises(ValueError, match="time zone"):
        Reading(
            device_id="dev-1",
            kind="water",
            time=datetime(2026, 11, 24, 10, 0),  # noqa: DTZ001 - naive on purpose
            received_at=RECEIVED,
            metrics={"ph": 7.0},
        )


@pytest.mark.parametrize("raw", [b"\xff\xfe\x00garbage", b"", b'{"ok": true}', bytes(range(256))])
def test_rejection_on_kafka_keeps_raw_bytes_exactly(raw: bytes) -> None:
    rej = Rejection(reason="not_utf8", detail="d", topic=TOPIC, raw=raw, received_at=RECEIVED)
    record = RejectedRecord.model_validate_json(rej.to_kafka())
    assert record.raw == raw
    assert (record.reason, record.detail, record.topic) == ("not_utf8", "d", TOPIC)
    assert record.received_at == RECEIVED


def test_adapter_rejection_on_kafka_keeps_invalid_utf8_payload() -> None:
    payload = b"\x80\x81{\xc3(garbage"
    rej = _rejected(decode_native(TOPIC, payload, RECEIVED))
    assert RejectedRecord.model_validate_json(rej.to_kafka()).raw == payload


# -- the metric registry against the design's table -----------------------------------------

DESIGN_METRICS: dict[str, dict[str, str]] = {
    "water": {
        "ph": "pH",
        "turbidity_ntu": "NTU",
        "dissolved_oxygen_mgl": "mg/L",
        "conductivity_uscm": "µS/cm",
        "temperature_c": "°C",
    },
    "air": {
        "pm25_ugm3": "µg/m³",
        "pm10_ugm3": "µg/m³",
        "no2_ppb": "ppb",
        "o3_ppb": "ppb",
        "so2_ppb": "ppb",
        "co_ppm": "ppm",
        "temperature_c": "°C",
        "humidity_pct": "%",
    },
    "flood": {"water_level_m": "m", "rain_mm_h": "mm/h", "flow_m3s": "m³/s"},
    "litter": {"litter_items": "count", "fill_level_pct": "%", "litter_kg": "kg"},
}
DESIGN_COMMON = {"battery_pct": "%", "rssi_dbm": "dBm"}


def test_registry_has_exactly_the_design_kinds_and_metrics_with_their_units() -> None:
    assert {k: {n: s.unit for n, s in m.items()} for k, m in METRICS.items()} == DESIGN_METRICS


def test_registry_common_metrics_match_the_design_with_their_units() -> None:
    assert {n: s.unit for n, s in COMMON.items()} == DESIGN_COMMON


def test_every_registry_range_is_non_empty() -> None:
    for specs in (*METRICS.values(), COMMON):
        for spec in specs.values():
            assert spec.minimum < spec.maximum, spec.name


@pytest.mark.parametrize(("kind", "metric"), [(k, m) for k in METRICS for m in METRICS[k]])
def test_every_registry_metric_decodes_at_its_range_midpoint(kind: str, metric: str) -> None:
    spec = METRICS[kind][metric]  # type: ignore[index]
    mid = (spec.minimum + spec.maximum) / 2
    readings = _readings(
        decode_native(f"citywatch/{kind}/dev-1/up", _json({"metrics": {metric: mid}}), RECEIVED)
    )
    assert readings[0].metrics == {metric: mid}


# -- issue 10: what a rejection may quote, device ids, the age and spread of one message --------


def hostile_payload(size: int = DEFAULT_MAX_PAYLOAD_BYTES) -> bytes:
    """A payload of exactly `size` bytes whose one metric name is DEL characters: each is one
    byte in the payload and five in a JSON-encoded repr (`\\\\x7f`), so a rejection that
    quotes the name whole is five times the payload (issue 10, point 1)."""
    head, tail = b'{"metrics": {"', b'": 1}}'
    return head + b"\x7f" * (size - len(head) - len(tail)) + tail


def test_rejection_of_a_hostile_metric_name_stays_far_below_kafkas_record_limit() -> None:
    payload = hostile_payload()
    assert len(payload) == DEFAULT_MAX_PAYLOAD_BYTES
    rej = _rejected(decode(TOPIC, payload, RECEIVED))
    assert rej.reason == "unknown_metric"
    assert len(rej.detail) <= MAX_DETAIL_CHARS
    value = rej.to_kafka()
    # Base64 of the whole payload (4/3 of 256 KiB) plus a capped detail: well under 1 MiB.
    assert len(value) < 4 * len(payload) // 3 + 4 * MAX_DETAIL_CHARS
    record = RejectedRecord.model_validate_json(value)
    assert record.raw == payload
    assert record.raw_size == len(payload)
    assert record.raw_sha256 == hashlib.sha256(payload).hexdigest()


def test_rejection_excerpt_keeps_the_whole_payloads_size_and_hash() -> None:
    payload = bytes(range(256)) * 64
    rej = Rejection(reason="r", detail="d", topic=TOPIC, raw=payload, received_at=RECEIVED)
    record = RejectedRecord.model_validate_json(rej.to_kafka(max_raw_bytes=1024))
    assert record.raw == payload[:1024]
    assert (record.raw_size, record.raw_sha256) == (
        len(payload),
        hashlib.sha256(payload).hexdigest(),
    )


@pytest.mark.parametrize("device_id", ["buoy-1\n", "buoy-1\r\n", "\nbuoy-1", ""])
def test_device_id_with_a_newline_is_not_a_device_id(device_id: str) -> None:
    assert not is_device_id(device_id)
    outcome = decode(f"citywatch/water/{device_id}/up", _json({"metrics": {"ph": 7}}), RECEIVED)
    assert _rejected(outcome).reason == "bad_topic"


def test_device_id_pattern_holds_in_pydantic_too() -> None:
    with pytest.raises(ValueError, match="pattern"):
        DeviceProfile(device_id="buoy-1\n", kind="water")
    assert is_device_id("buoy-1") and DeviceProfile(device_id="buoy-1", kind="water")


def _at(*times: datetime) -> bytes:
    return _json([{"time": t.isoformat(), "metrics": {"ph": 7}} for t in times])


def test_reading_older_than_the_age_bound_is_refused() -> None:
    bound = timedelta(days=90)
    old = RECEIVED - bound - timedelta(minutes=1)
    rej = _rejected(decode(TOPIC, _at(old), RECEIVED, max_age=bound))
    assert rej.reason == "time_too_old" and "90 days" in rej.detail
    ok = _readings(decode(TOPIC, _at(RECEIVED - bound + timedelta(minutes=1)), RECEIVED))
    assert len(ok) == 1


def test_message_spanning_more_than_the_spread_bound_is_refused() -> None:
    spread = timedelta(days=2)
    first = RECEIVED - timedelta(days=3)
    rej = _rejected(
        decode(
            TOPIC, _at(first, first + spread + timedelta(seconds=1)), RECEIVED, max_spread=spread
        )
    )
    assert rej.reason == "time_spread_too_wide"
    ok = decode(TOPIC, _at(first, first + spread), RECEIVED, max_spread=spread)
    assert len(_readings(ok)) == 2


def test_gateway_defaults_bound_age_and_spread() -> None:
    ingest = IngestSettings()
    assert timedelta(days=ingest.max_reading_age_days) == DEFAULT_MAX_AGE
    assert timedelta(hours=ingest.max_message_span_h) == DEFAULT_MAX_SPREAD
    years = _at(RECEIVED - timedelta(days=3000), RECEIVED)
    rej = _rejected(
        decode(TOPIC, years, RECEIVED, max_age=DEFAULT_MAX_AGE, max_spread=DEFAULT_MAX_SPREAD)
    )
    assert rej.reason == "time_too_old"
