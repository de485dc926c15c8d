"""ChirpStack v4 uplink event adapter, with the `up` event example from ChirpStack's own
documentation ("Event types") and FIWARE's WaterQualityObserved and FloodMonitoring
examples as decoded objects. No broker."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from schemas import Reading, Rejection
from schemas.adapters import DEFAULT_MAX_PAYLOAD_BYTES, decode
from schemas.device import DeviceProfile
from tests.adapter_contract import RECEIVED, AdapterContract, _readings, _rejected

# ChirpStack docs, Integrations > Event types, "up - Uplink event", JSON example (verbatim).
CHIRPSTACK_UP_EXAMPLE: dict[str, Any] = json.loads("""
{
	"deduplicationId": "3ac7e3c4-4401-4b8d-9386-a5c902f9202d",
	"time": "2022-07-18T09:34:15.775023242+00:00",
	"deviceInfo": {
		"tenantId": "52f14cd4-c6f1-4fbd-8f87-4025e1d49242",
		"tenantName": "ChirpStack",
		"applicationId": "17c82e96-be03-4f38-aef3-f83d48582d97",
		"applicationName": "Test application",
		"deviceProfileId": "14855bf7-d10d-4aee-b618-ebfcb64dc7ad",
		"deviceProfileName": "Test device-profile",
		"deviceName": "Test device",
		"devEui": "0101010101010101",
		"tags": {
			"key": "value"
		}
	},
	"devAddr": "00189440",
	"dr": 1,
	"fPort": 1,
	"data": "qg==",
	"rxInfo": [{
		"gatewayId": "0016c001f153a14c",
		"uplinkId": 4217106255,
		"rssi": -36,
		"snr": 10.5,
		"context": "E3OWOQ==",
		"metadata": {
			"region_name": "eu868",
			"region_common_name": "EU868"
		}
	}],
	"txInfo": {
		"frequency": 867100000,
		"modulation": {
			"lora": {
				"bandwidth": 125000,
				"spreadingFactor": 11,
				"codeRate": "CR_4_5"
			}
		}
	}
}
""")

# FIWARE Smart Data Models examples (keyValues): dataModel.WaterQuality/WaterQualityObserved
# and dataModel.Environment/FloodMonitoring, examples/example.json.
FIWARE_WATER_QUALITY_EXAMPLE: dict[str, Any] = json.loads("""
{
  "id": "waterqualityobserved:Sevilla:D1",
  "type": "WaterQualityObserved",
  "dateObserved": "2017-01-31T06:45:00Z",
  "measurand": [
    "NO3, 0.01, M1, Concentration of Nitrates"
  ],
  "location": {
    "type": "Point",
    "coordinates": [
      -5.993307,
      37.362882
    ]
  },
  "temperature": 24.4,
  "conductivity": 0.005,
  "pH": 7.4,
  "NO3": 0.01,
  "flow": 127.53
}
""")
FIWARE_FLOOD_EXAMPLE: dict[str, Any] = json.loads("""
{
  "id": "urn:ngsi-ld:FloodMonitoring:Pune-NoiseLevelObserved",
  "type": "FloodMonitoring",
  "alertLevel": 10.00,
  "measuredDistance": 3.22,
  "currentLevel": 0.98,
  "dangerLevel": 25.00,
  "observationDateTime": "2020-09-16T13:30:00+05:30",
  "referenceLevel": 4.2,
  "floodLevelStatus": "Normal",
  "stationID": "FWR013"
}
""")

APP = "17c82e96-be03-4f38-aef3-f83d48582d97"
EUI = "0101010101010101"
TOPIC = f"application/{APP}/device/{EUI}/event/up"


def _event(obj: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(CHIRPSTACK_UP_EXAMPLE)
    if obj is not None:
        body["object"] = obj
    body.update(changes)
    return body


def _cs(
    body: dict[str, Any],
    *,
    kind: str | None = "flood",
    mapping: dict[str, str] | str | None = None,
    topic: str = TOPIC,
) -> list[Reading] | Rejection:
    device = topic.split("/")[-3]
    profiles = (
        {
            device: DeviceProfile(  # type: ignore[arg-type]
                device_id=device, kind=kind, payload_format="chirpstack", field_mapping=mapping
            )
        }
        if kind is not None
        else {}
    )
    return decode(topic, json.dumps(body).encode(), RECEIVED, lookup=profiles.get)


class TestChirpstackAdapterContract(AdapterContract):
    source = "chirpstack"
    valid_topic = TOPIC
    valid_payload = json.dumps(_event({"water_level_m": 1.5})).encode()
    expected_rows = 1

    def decode(
        self,
        topic: str,
        payload: bytes,
        received_at: datetime,
        max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    ) -> list[Reading] | Rejection:
        return decode(topic, payload, received_at, max_bytes=max_bytes)


def test_docs_example_has_no_codec_object_so_it_is_no_decoded_payload() -> None:
    rej = _rejected(_cs(CHIRPSTACK_UP_EXAMPLE))
    assert rej.reason == "no_decoded_payload"
    assert "codec" in rej.detail


def test_docs_example_with_an_object_becomes_one_reading_with_every_field_placed() -> None:
    readings = _readings(_cs(_event({"water_level_m": 1.5, "rain_mm_h": 12}, fCnt=42)))
    assert len(readings) == 1
    r = readings[0]
    assert r.device_id == EUI
    assert r.kind == "flood"
    assert r.metrics == {"water_level_m": 1.5, "rain_mm_h": 12.0, "rssi_dbm": -36.0}
    assert r.seq == 42
    assert r.time == datetime(2022, 7, 18, 9, 34, 15, 775023, tzinfo=UTC)
    assert r.time_from_gateway is True
    assert (r.lat, r.lon) == (None, None)
    assert r.source == "chirpstack"


def test_event_without_frame_counter_has_no_seq() -> None:
    assert _readings(_cs(_event({"water_level_m": 1.5})))[0].seq is None


def test_dev_eui_is_compared_without_regard_to_case() -> None:
    body = _event({"water_level_m": 1.5})
    body["deviceInfo"]["devEui"] = "0A0B0C0D0E0F0102"
    topic = f"application/{APP}/device/0a0b0c0d0e0f0102/event/up"
    assert _readings(_cs(body, topic=topic))[0].device_id == "0a0b0c0d0e0f0102"


def test_dev_eui_differing_from_the_topic_is_device_mismatch() -> None:
    body = _event({"water_level_m": 1.5})
    body["deviceInfo"]["devEui"] = "0202020202020202"
    assert _rejected(_cs(body)).reason == "device_mismatch"


def test_application_differing_from_the_topic_is_device_mismatch() -> None:
    topic = f"application/another-app/device/{EUI}/event/up"
    assert _rejected(_cs(_event({"water_level_m": 1.5}), topic=topic)).reason == "device_mismatch"


def test_topic_prefix_is_accepted() -> None:
    topic = f"eu868/{TOPIC}"
    assert _readings(_cs(_event({"water_level_m": 1.5}), topic=topic))[0].device_id == EUI


def test_strongest_gateway_gives_the_rssi() -> None:
    body = _event({"water_level_m": 1.5}, rxInfo=[{"rssi": -110}, {"rssi": -64}, {"snr": 3}])
    assert _readings(_cs(body))[0].metrics["rssi_dbm"] == -64.0


def test_time_in_the_object_wins_over_the_event_time() -> None:
    r = _readings(_cs(_event({"water_level_m": 1.5, "time": 1_763_000_000})))[0]
    assert r.time == datetime.fromtimestamp(1_763_000_000, UTC)
    assert r.time_from_gateway is False


def test_numeric_object_field_without_mapping_is_unknown_metric_naming_it() -> None:
    rej = _rejected(_cs(_event({"waterLevel": 1.5})))
    assert rej.reason == "unknown_metric"
    assert "waterLevel" in rej.detail


def test_per_device_mapping_maps_network_server_names() -> None:
    readings = _readings(_cs(_event({"waterLevel": 1.5}), mapping={"waterLevel": "water_level_m"}))
    assert readings[0].metrics["water_level_m"] == 1.5


def test_unregistered_device_kind_is_inferred_from_its_metrics() -> None:
    assert _readings(_cs(_event({"litter_items": 40}), kind=None))[0].kind == "litter"


@pytest.mark.parametrize("obj", [None, "text", [1, 2]])
def test_object_that_is_not_a_json_object_is_no_decoded_payload(obj: Any) -> None:
    body = _event()
    body["object"] = obj
    assert _rejected(_cs(body)).reason == "no_decoded_payload"


def test_negative_frame_counter_is_invalid_structure() -> None:
    assert _rejected(_cs(_event({"water_level_m": 1}, fCnt=-1))).reason == "invalid_structure"


# -- FIWARE shipped mappings ----------------------------------------------------------------


def test_fiware_water_quality_example_converts_conductivity_from_siemens_per_metre() -> None:
    readings = _readings(
        _cs(_event(FIWARE_WATER_QUALITY_EXAMPLE), kind="water", mapping="fiware-water-quality")
    )
    r = readings[0]
    # 0.005 S/m = 0.05 mS/cm = 50 µS/cm; NO3 and flow are in the model but not in CityWatch.
    assert r.metrics == {
        "temperature_c": 24.4,
        "conductivity_uscm": pytest.approx(50.0),
        "ph": 7.4,
        "rssi_dbm": -36.0,
    }
    assert r.time == datetime(2017, 1, 31, 6, 45, tzinfo=UTC)


def test_fiware_flood_example_maps_current_level_and_observation_time() -> None:
    readings = _readings(_cs(_event(FIWARE_FLOOD_EXAMPLE), mapping="fiware-flood"))
    r = readings[0]
    assert r.metrics == {"water_level_m": 0.98, "rssi_dbm": -36.0}
    assert r.time == datetime(2020, 9, 16, 8, 0, tzinfo=UTC)
    assert r.time_from_gateway is False


def test_fiware_air_quality_relative_humidity_fraction_becomes_percent() -> None:
    readings = _readings(
        _cs(
            _event({"relativeHumidity": 0.81, "pm25": 35}), kind="air", mapping="fiware-air-quality"
        )
    )
    assert readings[0].metrics["humidity_pct"] == pytest.approx(81.0)
    assert readings[0].metrics["pm25_ugm3"] == 35.0


def test_fiware_field_outside_the_model_is_still_unknown_metric() -> None:
    rej = _rejected(_cs(_event({"currentLevel": 1, "sensorTemp": 30}), mapping="fiware-flood"))
    assert rej.reason == "unknown_metric"
    assert "sensorTemp" in rej.detail
