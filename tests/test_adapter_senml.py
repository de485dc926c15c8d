"""SenML (RFC 8428) adapter: the RFC's own examples (Section 5.1), its resolution rules,
unit conversion and the payload-shape rule that tells SenML from native JSON. No broker."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from schemas import Reading, Rejection
from schemas.adapters import DEFAULT_MAX_PAYLOAD_BYTES, decode, looks_like_senml, resolve
from schemas.adapters.senml import decode_senml
from schemas.device import DeviceProfile
from tests.adapter_contract import RECEIVED, AdapterContract, _readings, _rejected

# -- RFC 8428 Section 5.1 examples, verbatim ------------------------------------------------------

RFC_5_1_1_SINGLE_DATAPOINT = """
[
  {"n":"urn:dev:ow:10e2073a01080063","u":"Cel","v":23.1}
]
"""
RFC_5_1_2_MULTIPLE_DATAPOINTS = """
[
  {"bn":"urn:dev:ow:10e2073a01080063:","n":"voltage","u":"V","v":120.1},
  {"n":"current","u":"A","v":1.2}
]
"""
RFC_5_1_2_MULTIPLE_DATAPOINTS_TIMED = """
[
  {"bn":"urn:dev:ow:10e2073a0108006:","bt":1.276020076001e+09,
   "bu":"A","bver":5,
   "n":"voltage","u":"V","v":120.1},
  {"n":"current","t":-5,"v":1.2},
  {"n":"current","t":-4,"v":1.3},
  {"n":"current","t":-3,"v":1.4},
  {"n":"current","t":-2,"v":1.5},
  {"n":"current","t":-1,"v":1.6},
  {"n":"current","v":1.7}
]
"""
RFC_5_1_2_STREAM = """
[
  {"bn":"urn:dev:ow:10e2073a01080063","bt":1.320067464e+09,
   "bu":"%RH","v":21.2},
  {"t":10,"v":21.3},
  {"t":20,"v":21.4},
  {"t":30,"v":21.4},
  {"t":40,"v":21.5},
  {"t":50,"v":21.5},
  {"t":60,"v":21.5},
  {"t":70,"v":21.6},
  {"t":80,"v":21.7}
]
"""
RFC_5_1_3_MULTIPLE_MEASUREMENTS = """
[
  {"bn":"urn:dev:ow:10e2073a01080063","bt":1.320067464e+09,
   "bu":"%RH","v":20},
  {"u":"lon","v":24.30621},
  {"u":"lat","v":60.07965},
  {"t":60,"v":20.3},
  {"u":"lon","t":60,"v":24.30622},
  {"u":"lat","t":60,"v":60.07965},
  {"t":120,"v":20.7},
  {"u":"lon","t":120,"v":24.30623},
  {"u":"lat","t":120,"v":60.07966},
  {"u":"%EL","t":150,"v":98},
  {"t":180,"v":21.2},
  {"u":"lon","t":180,"v":24.30628},
  {"u":"lat","t":180,"v":60.07967}
]
"""
RFC_5_1_4_RESOLVED_DATA = """
[
  {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067464e+09,
   "v":20},
  {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067464e+09,
   "v":24.30621},
  {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067464e+09,
   "v":60.07965},
  {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067524e+09,
   "v":20.3},
  {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067524e+09,
   "v":24.30622},
  {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067524e+09,
   "v":60.07965},
  {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067584e+09,
   "v":20.7},
  {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067584e+09,
   "v":24.30623},
  {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067584e+09,
   "v":60.07966},
  {"n":"urn:dev:ow:10e2073a01080063","u":"%EL","t":1.320067614e+09,
   "v":98},
  {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067644e+09,
   "v":21.2},
  {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067644e+09,
   "v":24.30628},
  {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067644e+09,
   "v":60.07967}
]
"""
RFC_5_1_5_MULTIPLE_DATA_TYPES = """
[
  {"bn":"urn:dev:ow:10e2073a01080063:","n":"temp","u":"Cel","v":23.1},
  {"n":"label","vs":"Machine Room"},
  {"n":"open","vb":false},
  {"n":"nfc-reader","vd":"aGkgCg"}
]
"""
RFC_5_1_6_COLLECTION_OF_RESOURCES = """
[
  {"bn":"2001:db8::2/","bt":1.320078429e+09,
   "n":"temperature","u":"Cel","v":25.2},
  {"n":"humidity","u":"%RH","v":30},
  {"bn":"2001:db8::1/","n":"temperature","u":"Cel","v":12.3},
  {"n":"humidity","u":"%RH","v":67}
]
"""
RFC_5_1_7_SETTING_AN_ACTUATOR = """
[
  {"bn":"urn:dev:ow:10e2073a01080063:"},
  {"n":"temp","u":"Cel","v":23.1},
  {"n":"heat","u":"/","v":1},
  {"n":"fan","u":"/","v":0}
]
"""
RFC_5_1_7_SYNCHRONIZED_LIGHTS_OFF = """
[
  {"bt":1.320078429e+09,"bu":"/","n":"2001:db8::3","v":0.5},
  {"n":"2001:db8::4","v":0.5},
  {"n":"2001:db8::3","t":0.1,"v":0},
  {"n":"2001:db8::4","t":0.1,"v":0}
]
"""

RFC_DEVICE = "urn:dev:ow:10e2073a01080063"


def _pack(text: str) -> bytes:
    return text.encode()


def _epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _senml(
    kind: str,
    payload: bytes | list[Any],
    mapping: dict[str, str] | str | None = None,
    device: str = "dev-1",
) -> list[Reading] | Rejection:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    profile = (
        DeviceProfile(device_id=device, kind=kind, field_mapping=mapping)  # type: ignore[arg-type]
        if mapping is not None
        else None
    )
    return decode_senml(f"citywatch/{kind}/{device}/up", body, RECEIVED, profile)


class TestSenmlAdapterContract(AdapterContract):
    source = "senml"
    valid_topic = "citywatch/air/dev-1/up"
    valid_payload = _pack(RFC_5_1_3_MULTIPLE_MEASUREMENTS)
    expected_rows = 5

    def decode(
        self,
        topic: str,
        payload: bytes,
        received_at: datetime,
        max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    ) -> list[Reading] | Rejection:
        return decode(topic, payload, received_at, max_bytes=max_bytes)


# -- resolution (RFC 8428 Section 4.6) ----------------------------------------------------------


def _resolved(text: str) -> list[tuple[str, str | None, float | None, float]]:
    return [(r.name, r.unit, r.value, r.time) for r in resolve(json.loads(text))]


def test_rfc_5_1_3_resolves_to_exactly_the_rfc_5_1_4_resolved_records() -> None:
    assert _resolved(RFC_5_1_3_MULTIPLE_MEASUREMENTS) == _resolved(RFC_5_1_4_RESOLVED_DATA)


def test_rfc_5_1_2_base_unit_applies_to_later_records_and_own_unit_wins() -> None:
    records = _resolved(RFC_5_1_2_MULTIPLE_DATAPOINTS_TIMED)
    assert records[0] == ("urn:dev:ow:10e2073a0108006:voltage", "V", 120.1, 1.276020076001e09)
    assert [r[1] for r in records[1:]] == ["A"] * 6
    assert [r[3] - 1.276020076001e09 for r in records[1:]] == pytest.approx([-5, -4, -3, -2, -1, 0])
    assert [r[2] for r in records[1:]] == [1.2, 1.3, 1.4, 1.5, 1.6, 1.7]


def test_rfc_5_1_2_names_concatenate_base_name_and_name() -> None:
    assert [r[0] for r in _resolved(RFC_5_1_2_MULTIPLE_DATAPOINTS)] == [
        "urn:dev:ow:10e2073a01080063:voltage",
        "urn:dev:ow:10e2073a01080063:current",
    ]


def test_rfc_5_1_6_a_later_base_name_replaces_the_earlier_but_base_time_stays() -> None:
    records = _resolved(RFC_5_1_6_COLLECTION_OF_RESOURCES)
    assert [r[0] for r in records] == [
        "2001:db8::2/temperature",
        "2001:db8::2/humidity",
        "2001:db8::1/temperature",
        "2001:db8::1/humidity",
    ]
    assert {r[3] for r in records} == {1.320078429e09}


def test_rfc_5_1_7_record_of_base_fields_only_yields_no_record() -> None:
    assert [r[0] for r in _resolved(RFC_5_1_7_SETTING_AN_ACTUATOR)] == [
        f"{RFC_DEVICE}:temp",
        f"{RFC_DEVICE}:heat",
        f"{RFC_DEVICE}:fan",
    ]


def test_rfc_5_1_7_fractional_relative_offsets_add_to_base_time() -> None:
    times = [r[3] for r in _resolved(RFC_5_1_7_SYNCHRONIZED_LIGHTS_OFF)]
    assert times == pytest.approx([1.320078429e09] * 2 + [1.320078429e09 + 0.1] * 2)


def test_rfc_5_1_5_text_boolean_and_data_values_resolve_without_a_numeric_value() -> None:
    records = resolve(json.loads(RFC_5_1_5_MULTIPLE_DATA_TYPES))
    assert [(r.value, r.other) for r in records] == [
        (23.1, None),
        (None, "Machine Room"),
        (None, False),
        (None, "aGkgCg"),
    ]


def test_base_value_and_base_sum_are_added() -> None:
    records = resolve([{"bn": "d:", "bv": 20, "bs": 100, "n": "x", "v": 1.5, "s": 2}, {"n": "y"}])
    assert (records[0].value, records[0].sum) == (21.5, 102)
    # A record with only a name but with a base sum in force has a sum (RFC 8428 4.5.4).
    assert (records[1].value, records[1].sum) == (None, 100)


# -- RFC examples decoded into CityWatch readings ---------------------------------------------


def test_rfc_5_1_1_single_datapoint_with_mapping_is_one_reading_at_receive_time() -> None:
    readings = _readings(
        _senml("water", _pack(RFC_5_1_1_SINGLE_DATAPOINT), {RFC_DEVICE: "temperature_c"})
    )
    assert len(readings) == 1
    assert readings[0].metrics == {"temperature_c": 23.1}
    assert readings[0].time == RECEIVED
    assert readings[0].time_from_gateway is True
    assert readings[0].source == "senml"


def test_rfc_5_1_1_record_named_as_the_device_is_identified_by_its_unit() -> None:
    readings = _readings(_senml("water", _pack(RFC_5_1_1_SINGLE_DATAPOINT)))
    assert readings[0].metrics == {"temperature_c": 23.1}


def test_rfc_5_1_1_on_a_kind_without_a_celsius_metric_is_unknown_metric_naming_it() -> None:
    rej = _rejected(_senml("litter", _pack(RFC_5_1_1_SINGLE_DATAPOINT)))
    assert rej.reason == "unknown_metric"
    assert RFC_DEVICE in rej.detail


def test_named_record_is_not_guessed_from_its_unit() -> None:
    # "dewpoint" in Cel is a temperature, but not the one CityWatch stores as temperature_c.
    rej = _rejected(_senml("air", [{"bn": f"{RFC_DEVICE}:", "n": "dewpoint", "u": "Cel", "v": 9}]))
    assert rej.reason == "unknown_metric"
    assert "dewpoint" in rej.detail


def test_record_named_as_the_topic_device_is_identified_by_its_unit() -> None:
    readings = _readings(_senml("flood", [{"n": "gauge-3", "u": "cm", "v": 120}], device="gauge-3"))
    assert readings[0].metrics == {"water_level_m": 1.2}


def test_unit_shared_by_several_metrics_of_the_kind_does_not_identify_a_record() -> None:
    rej = _rejected(_senml("air", [{"n": RFC_DEVICE, "u": "ug/m3", "v": 9}]))
    assert rej.reason == "unknown_metric"


def test_rfc_5_1_2_voltage_mapped_to_a_metric_is_unit_not_convertible_naming_volts() -> None:
    rej = _rejected(
        _senml("flood", _pack(RFC_5_1_2_MULTIPLE_DATAPOINTS), {"voltage": "water_level_m"})
    )
    assert rej.reason == "unit_not_convertible"
    assert "'V'" in rej.detail
    assert "water_level_m" in rej.detail


def test_rfc_5_1_2_stream_of_humidity_is_one_reading_per_instant_by_unit() -> None:
    readings = _readings(_senml("air", _pack(RFC_5_1_2_STREAM)))
    assert [r.time for r in readings] == [_epoch(1.320067464e09 + 10 * i) for i in range(9)]
    assert [r.metrics["humidity_pct"] for r in readings] == [
        21.2, 21.3, 21.4, 21.4, 21.5, 21.5, 21.5, 21.6, 21.7,
    ]  # fmt: skip
    assert all(r.time_from_gateway is False for r in readings)


def test_rfc_5_1_3_groups_records_into_readings_by_resolved_time() -> None:
    readings = _readings(_senml("air", _pack(RFC_5_1_3_MULTIPLE_MEASUREMENTS)))
    base = 1.320067464e09
    assert [(r.time, r.metrics) for r in readings] == [
        (_epoch(base), {"humidity_pct": 20.0}),
        (_epoch(base + 60), {"humidity_pct": 20.3}),
        (_epoch(base + 120), {"humidity_pct": 20.7}),
        (_epoch(base + 150), {"battery_pct": 98.0}),
        (_epoch(base + 180), {"humidity_pct": 21.2}),
    ]
    assert [(r.lat, r.lon) for r in readings] == [
        (60.07965, 24.30621),
        (60.07965, 24.30622),
        (60.07966, 24.30623),
        (None, None),
        (60.07967, 24.30628),
    ]


def test_rfc_5_1_4_resolved_form_decodes_to_the_same_readings_as_5_1_3() -> None:
    assert _senml("air", _pack(RFC_5_1_4_RESOLVED_DATA)) == _senml(
        "air", _pack(RFC_5_1_3_MULTIPLE_MEASUREMENTS)
    )


def test_rfc_5_1_5_text_boolean_and_data_records_are_ignored() -> None:
    readings = _readings(
        _senml("water", _pack(RFC_5_1_5_MULTIPLE_DATA_TYPES), {"temp": "temperature_c"})
    )
    assert [r.metrics for r in readings] == [{"temperature_c": 23.1}]


def test_rfc_5_1_5_boolean_record_mapped_to_a_metric_is_wrong_type() -> None:
    rej = _rejected(
        _senml("water", _pack(RFC_5_1_5_MULTIPLE_DATA_TYPES), {"temp": "-", "open": "ph"})
    )
    assert rej.reason == "wrong_type"
    assert "open" in rej.detail


def test_rfc_5_1_6_two_resources_on_one_metric_at_one_instant_is_refused() -> None:
    mapping = {"temperature": "temperature_c", "humidity": "humidity_pct"}
    rej = _rejected(_senml("air", _pack(RFC_5_1_6_COLLECTION_OF_RESOURCES), mapping))
    assert rej.reason == "invalid_structure"
    assert "again" in rej.detail


def test_rfc_5_1_6_full_names_in_the_mapping_pick_one_resource() -> None:
    mapping = {
        "2001:db8::2/temperature": "temperature_c",
        "2001:db8::2/humidity": "humidity_pct",
        "2001:db8::1/temperature": "-",
        "2001:db8::1/humidity": "-",
    }
    readings = _readings(_senml("air", _pack(RFC_5_1_6_COLLECTION_OF_RESOURCES), mapping))
    assert [(r.time, r.metrics) for r in readings] == [
        (_epoch(1.320078429e09), {"temperature_c": 25.2, "humidity_pct": 30.0})
    ]


def test_rfc_5_1_7_actuator_pack_decodes_its_mapped_temperature() -> None:
    mapping = {"temp": "temperature_c", "heat": "-", "fan": "-"}
    readings = _readings(_senml("water", _pack(RFC_5_1_7_SETTING_AN_ACTUATOR), mapping))
    assert [r.metrics for r in readings] == [{"temperature_c": 23.1}]


# -- names, units, times ---------------------------------------------------------------------


def test_record_named_after_a_metric_needs_no_mapping() -> None:
    readings = _readings(_senml("water", [{"bn": "urn:dev:ow:1:", "n": "ph", "v": 7.1}]))
    assert readings[0].metrics == {"ph": 7.1}


def test_metric_name_after_the_last_colon_of_a_name_without_base_name_is_found() -> None:
    readings = _readings(_senml("water", [{"n": "urn:dev:ow:1:ph", "v": 7.1}]))
    assert readings[0].metrics == {"ph": 7.1}


@pytest.mark.parametrize(
    ("kind", "record", "metric", "expected"),
    [
        ("water", {"n": "temperature_c", "u": "Cel", "v": 23.5}, "temperature_c", 23.5),
        ("water", {"n": "temperature_c", "u": "K", "v": 296.65}, "temperature_c", 23.5),
        ("water", {"n": "conductivity_uscm", "u": "S/m", "v": 0.005}, "conductivity_uscm", 50.0),
        ("air", {"n": "humidity_pct", "u": "%RH", "v": 54}, "humidity_pct", 54.0),
        ("air", {"n": "humidity_pct", "u": "/", "v": 0.54}, "humidity_pct", 54.0),
        ("air", {"n": "pm25_ugm3", "u": "ug/m3", "v": 35}, "pm25_ugm3", 35.0),
        ("air", {"n": "co_ppm", "u": "ppb", "v": 900}, "co_ppm", 0.9),
        ("flood", {"n": "water_level_m", "u": "cm", "v": 250}, "water_level_m", 2.5),
        ("flood", {"n": "rain_mm_h", "u": "mm/h", "v": 12}, "rain_mm_h", 12.0),
        ("flood", {"n": "flow_m3s", "u": "l/s", "v": 1500}, "flow_m3s", 1.5),
        ("litter", {"n": "fill_level_pct", "u": "/", "v": 0.4}, "fill_level_pct", 40.0),
        ("litter", {"n": "litter_kg", "u": "g", "v": 2500}, "litter_kg", 2.5),
        ("air", {"n": "battery_pct", "u": "%EL", "v": 77}, "battery_pct", 77.0),
    ],
)
def test_senml_units_convert_to_the_registry_unit(
    kind: str, record: dict[str, Any], metric: str, expected: float
) -> None:
    readings = _readings(_senml(kind, [record]))
    assert readings[0].metrics[metric] == pytest.approx(expected)


def test_unit_that_cannot_be_converted_is_rejected_naming_the_unit() -> None:
    rej = _rejected(_senml("water", [{"n": "ph", "u": "Cel", "v": 7}]))
    assert rej.reason == "unit_not_convertible"
    assert "'Cel'" in rej.detail
    assert "pH" in rej.detail  # the accepted units are listed


def test_senml_percent_is_a_ratio_so_55_percent_is_out_of_range() -> None:
    # RFC 8428 Table 6 note 2: '%' is the ratio 0..1, not a percentage.
    rej = _rejected(_senml("air", [{"n": "humidity_pct", "u": "%", "v": 55}]))
    assert rej.reason == "out_of_range"


def test_converted_value_outside_the_range_is_out_of_range() -> None:
    rej = _rejected(_senml("water", [{"n": "temperature_c", "u": "K", "v": 400}]))
    assert rej.reason == "out_of_range"
    assert "temperature_c" in rej.detail


def test_relative_time_counts_back_from_receive_time() -> None:
    readings = _readings(_senml("water", [{"n": "ph", "v": 7, "t": -60}]))
    assert readings[0].time == RECEIVED - timedelta(seconds=60)
    assert readings[0].time_from_gateway is True


def test_base_time_plus_time_at_2_pow_28_is_absolute() -> None:
    readings = _readings(_senml("water", [{"bt": 2**28 - 10, "n": "ph", "v": 7, "t": 10}]))
    assert readings[0].time == datetime(1978, 7, 4, 21, 24, 16, tzinfo=UTC)
    assert readings[0].time_from_gateway is False


def test_time_just_below_2_pow_28_is_relative_and_lands_in_the_future() -> None:
    readings = _readings(_senml("water", [{"n": "ph", "v": 7, "t": 2**28 - 1}]))
    assert readings[0].time == RECEIVED + timedelta(seconds=2**28 - 1)
    rej = _rejected(decode("citywatch/water/dev-1/up", b'[{"n":"ph","v":7,"t":3600}]', RECEIVED))
    assert rej.reason == "time_in_future"


def test_absolute_time_out_of_range_is_bad_time() -> None:
    assert _rejected(_senml("water", [{"n": "ph", "v": 7, "t": 1e300}])).reason == "bad_time"
    assert _rejected(_senml("water", [{"n": "ph", "v": 7, "t": -1e300}])).reason == "bad_time"


def test_same_metric_twice_at_one_instant_is_refused_naming_both_records() -> None:
    rej = _rejected(_senml("water", [{"n": "ph", "v": 7}, {"n": "ph", "v": 7.1}]))
    assert rej.reason == "invalid_structure"
    assert "record 0" in rej.detail
    assert "record 1" in rej.detail


# -- structure ------------------------------------------------------------------------------


def test_version_above_10_is_refused() -> None:
    rej = _rejected(_senml("water", [{"bver": 11, "n": "ph", "v": 7}]))
    assert rej.reason == "unsupported_version"


def test_different_versions_in_one_pack_are_refused() -> None:
    rej = _rejected(_senml("water", [{"bver": 10, "n": "ph", "v": 7}, {"bver": 5, "n": "x"}]))
    assert rej.reason == "invalid_structure"


def test_must_understand_label_is_refused_and_unknown_label_ignored() -> None:
    rej = _rejected(_senml("water", [{"n": "ph", "v": 7, "foo_": 1}]))
    assert rej.reason == "invalid_structure"
    assert "foo_" in rej.detail
    assert _readings(_senml("water", [{"n": "ph", "v": 7, "foo": 1}]))[0].metrics == {"ph": 7}


@pytest.mark.parametrize("name", ["-ph", "p h", "ph#1", ""])
def test_resolved_name_outside_the_rfc_character_set_is_refused(name: str) -> None:
    rej = _rejected(_senml("water", [{"n": name, "v": 7}]))
    assert rej.reason == "invalid_structure"


def test_record_with_two_values_is_refused() -> None:
    rej = _rejected(_senml("water", [{"n": "ph", "v": 7, "vs": "7"}]))
    assert rej.reason == "invalid_structure"


def test_record_with_a_name_but_no_value_is_refused() -> None:
    rej = _rejected(_senml("water", [{"n": "ph"}]))
    assert rej.reason == "invalid_structure"
    assert "no value" in rej.detail


def test_non_number_v_is_wrong_type() -> None:
    assert _rejected(_senml("water", [{"n": "ph", "v": "7"}])).reason == "wrong_type"


def test_pack_with_only_ignored_records_is_no_metrics() -> None:
    assert _rejected(_senml("water", [{"n": "label", "vs": "x"}])).reason == "no_metrics"


def test_latitude_outside_range_is_refused() -> None:
    rej = _rejected(_senml("water", [{"n": "ph", "v": 7}, {"u": "lat", "v": 91, "n": "p"}]))
    assert rej.reason == "invalid_structure"


# -- which adapter: the payload-shape rule ------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "senml"),
    [
        (RFC_5_1_3_MULTIPLE_MEASUREMENTS.encode(), True),
        (b'  \n[ {"v": 1, "n": "ph"} ]', True),
        (b'[{"metrics": {"ph": 7}}]', False),
        (b'[{"metrics": {"ph": 7}, "n": "ph"}]', False),
        (b'{"metrics": {"ph": 7}}', False),
        (b'{"n": "ph", "v": 7}', False),
        (b"[]", False),
        (b"[1, 2]", False),
        (b"[{", False),
        (b"\xff[", False),
    ],
)
def test_senml_is_recognised_by_a_first_record_with_senml_labels(
    payload: bytes, senml: bool
) -> None:
    assert looks_like_senml(payload) is senml


def test_native_list_on_the_same_topic_still_decodes_as_native() -> None:
    payload = b'[{"metrics": {"ph": 7.0}}, {"metrics": {"ph": 7.1}}]'
    readings = _readings(decode("citywatch/water/dev-1/up", payload, RECEIVED))
    assert [r.source for r in readings] == ["native", "native"]


def test_registry_mapping_and_kind_apply_through_the_entry_point() -> None:
    profile = DeviceProfile(
        device_id="dev-1", kind="water", field_mapping={"temp": "temperature_c"}
    )
    readings = _readings(
        decode(
            "citywatch/water/dev-1/up",
            RFC_5_1_5_MULTIPLE_DATA_TYPES.encode(),
            RECEIVED,
            lookup={"dev-1": profile}.get,
            unknown="reject",
        )
    )
    assert readings[0].metrics == {"temperature_c": 23.1}
