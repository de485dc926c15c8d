"""The Things Stack v3 uplink adapter, with the uplink example from The Things Stack's own
documentation ("Data Formats", uplink message example) and FIWARE's AirQualityObserved
example as a decoded payload. No broker."""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from schemas import Reading, Rejection
from schemas.adapters import DEFAULT_MAX_PAYLOAD_BYTES, decode
from schemas.device import DeviceProfile
from tests.adapter_contract import RECEIVED, AdapterContract, _readings, _rejected
from tests.harness import REPO

# The Things Stack docs, Integrations > Data Formats, "Uplink message example" (verbatim).
TTS_UPLINK_EXAMPLE: dict[str, Any] = json.loads("""
{
  "end_device_ids" : {
    "device_id" : "dev1",
    "application_ids" : {
      "application_id" : "app1"
    },
    "dev_eui" : "0004A30B001C0530",
    "join_eui" : "800000000000000C",
    "dev_addr" : "00BCB929"
  },
  "correlation_ids" : [
    "as:up:01E0WZGT6Y7657CPFPE5WEYDSQ",
    "gs:conn:01E0WDEC6T5T4XXBAX7S1VMFKE",
    "gs:uplink:01E0WZGSZWT07NE5TS2APTV1Z9",
    "ns:uplink:01E0WZGSZXZXZS8RFAWZX0F2FY",
    "rpc:/ttn.lorawan.v3.GsNs/HandleUplink:01E0WZGSZXGE1KS577PFBWRJEE"
  ],
  "received_at" : "2020-02-12T15:15:46.014773143Z",
  "uplink_message" : {
    "session_key_id" : "AXA50tHUGUucuzS/bCGMNw==",
    "f_cnt" : 1,
    "frm_payload" : "gkHe",
    "decoded_payload" : {
      "temperature": 1.0,
      "luminosity": 0.64
    },
    "rx_metadata" : [ {
      "gateway_ids" : {
        "gateway_id" : "gtw1",
        "eui" : "9C5C8E00001A05C4"
      },
      "time" : "2020-02-12T15:15:45.787Z",
      "timestamp" : 2463457000,
      "rssi" : -35,
      "channel_rssi" : -35,
      "snr" : 5,
      "uplink_token" : "ChIKEAoEZ3R3MRIInFyOAAAaBcQQ6L3Vlgk=",
      "channel_index" : 2
    } ],
    "settings" : {
      "data_rate" : {
        "lora" : {
          "bandwidth" : 125000,
          "spreading_factor" : 7
        }
      },
      "coding_rate" : "4/6",
      "frequency" : "868300000",
      "timestamp" : 2463457000,
      "time" : "2020-02-12T15:15:45.787Z"
    },
    "consumed_airtime": "0.056576s",
    "locations": {
      "user": {
        "latitude": 37.97155556731436,
        "longitude": 23.72678801175413,
        "altitude": 10,
        "source": "SOURCE_REGISTRY"
      }
    },
    "version_ids": {
        "brand_id": "the-things-products",
        "model_id": "the-things-uno",
        "hardware_version": "1.0",
        "firmware_version": "quickstart",
        "band_id": "US_902_928"
    },
    "network_ids": {
      "net_id": "000013",
      "tenant_id": "tenant1",
      "cluster_id": "nam1"
    },
    "received_at" : "2020-02-12T15:15:45.789585559Z"
  }
}
""")

# FIWARE Smart Data Models, dataModel.Environment/AirQualityObserved/examples/example.json.
FIWARE_AIR_QUALITY_EXAMPLE: dict[str, Any] = json.loads("""
{
  "id": "Madrid-AmbientObserved-28079004-2016-03-15T11:00:00",
  "type": "AirQualityObserved",
  "address": {
    "addressCountry": "ES",
    "addressLocality": "Madrid",
    "streetAddress": "Plaza de España"
  },
  "dateObserved": "2016-03-15T11:00:00/2016-03-15T12:00:00",
  "areaServed": "Brooklands",
  "location": {
    "type": "Point",
    "coordinates": [-3.712247222222222, 40.423852777777775]
  },
  "source": "http://datos.madrid.es",
  "typeOfLocation": "outdoor",
  "precipitation": 0,
  "relativeHumidity": 0.54,
  "temperature": 12.2,
  "windDirection": 176,
  "windSpeed": 0.64,
  "airQualityLevel": "moderate",
  "airQualityIndex": 65,
  "reliability": 0.7,
  "co": 500,
  "no": 45,
  "co2": 69,
  "nox": 139,
  "so2": 11,
  "coLevel": "moderate",
  "refPointOfInterest": "28079004-Pza.deEspanya"
}
""")

TOPIC = "v3/app1@tenant1/devices/dev1/up"
DOCS_MAPPING = {"temperature": "temperature_c", "luminosity": "-"}


def _uplink(decoded: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(TTS_UPLINK_EXAMPLE)
    if decoded is not None:
        body["uplink_message"]["decoded_payload"] = decoded
    body["uplink_message"].update(changes)
    return body


def _ttn(
    body: dict[str, Any] | bytes,
    *,
    kind: str | None = "air",
    mapping: dict[str, str] | str | None = None,
    topic: str = TOPIC,
) -> list[Reading] | Rejection:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    device = topic.split("/")[-2]
    profiles = (
        {
            device: DeviceProfile(  # type: ignore[arg-type]
                device_id=device, kind=kind, payload_format="ttn", field_mapping=mapping
            )
        }
        if kind is not None
        else {}
    )
    return decode(topic, payload, RECEIVED, lookup=profiles.get, unknown="accept")


class TestTtnAdapterContract(AdapterContract):
    source = "ttn"
    valid_topic = TOPIC
    valid_payload = json.dumps(_uplink({"temperature_c": 21.5})).encode()
    expected_rows = 1

    def decode(
        self,
        topic: str,
        payload: bytes,
        received_at: datetime,
        max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    ) -> list[Reading] | Rejection:
        profile = DeviceProfile(device_id="dev1", kind="air", payload_format="ttn")
        return decode(
            topic, payload, received_at, lookup={"dev1": profile}.get, max_bytes=max_bytes
        )


def test_docs_example_with_a_mapping_becomes_one_reading_with_every_field_placed() -> None:
    readings = _readings(_ttn(TTS_UPLINK_EXAMPLE, mapping=DOCS_MAPPING))
    assert len(readings) == 1
    r = readings[0]
    assert r.device_id == "dev1"
    assert r.kind == "air"
    assert r.metrics == {"temperature_c": 1.0, "rssi_dbm": -35.0}
    assert r.seq == 1
    # No time in the decoded payload: the network server's receive time, flagged as such.
    assert r.time == datetime(2020, 2, 12, 15, 15, 45, 789585, tzinfo=UTC)
    assert r.time_from_gateway is True
    assert (r.lat, r.lon) == (37.97155556731436, 23.72678801175413)
    assert r.source == "ttn"


def test_docs_example_without_mapping_is_unknown_metric_naming_the_field() -> None:
    rej = _rejected(_ttn(TTS_UPLINK_EXAMPLE))
    assert rej.reason == "unknown_metric"
    assert "'temperature'" in rej.detail


def test_uplink_without_decoded_payload_is_rejected_with_that_reason() -> None:
    body = _uplink()
    del body["uplink_message"]["decoded_payload"]
    rej = _rejected(_ttn(body, mapping=DOCS_MAPPING))
    assert rej.reason == "no_decoded_payload"
    assert "payload formatter" in rej.detail


def test_message_without_uplink_message_is_invalid_structure() -> None:
    body = _uplink()
    del body["uplink_message"]
    assert _rejected(_ttn(body)).reason == "invalid_structure"


@pytest.mark.parametrize(
    "topic",
    [
        "v3/app1@tenant1/devices/dev1/up",
        "v3/app1/devices/dev1/up",  # The Things Network community: no tenant
        "bridge/site-a/v3/app1@ttn/devices/dev1/up",
    ],
)
def test_tenant_and_community_topics_and_prefixes_are_accepted(topic: str) -> None:
    readings = _readings(_ttn(TTS_UPLINK_EXAMPLE, mapping=DOCS_MAPPING, topic=topic))
    assert readings[0].device_id == "dev1"


def test_device_id_differing_from_the_topic_is_device_mismatch() -> None:
    body = _uplink()
    body["end_device_ids"]["device_id"] = "someone-else"
    assert _rejected(_ttn(body, mapping=DOCS_MAPPING)).reason == "device_mismatch"


def test_application_id_differing_from_the_topic_is_device_mismatch() -> None:
    body = _uplink()
    body["end_device_ids"]["application_ids"]["application_id"] = "other-app"
    assert _rejected(_ttn(body, mapping=DOCS_MAPPING)).reason == "device_mismatch"


def test_strongest_gateway_gives_the_rssi() -> None:
    rx = [{"rssi": -120, "snr": -7}, {"rssi": -98.5, "snr": 2}, {"snr": 9}, "junk"]
    readings = _readings(_ttn(_uplink(rx_metadata=rx), mapping=DOCS_MAPPING))
    assert readings[0].metrics["rssi_dbm"] == -98.5


def test_uplink_without_gateway_metadata_has_no_rssi() -> None:
    body = _uplink()
    del body["uplink_message"]["rx_metadata"]
    assert "rssi_dbm" not in _readings(_ttn(body, mapping=DOCS_MAPPING))[0].metrics


def test_time_in_the_decoded_payload_wins_and_is_the_devices() -> None:
    decoded = {"temperature_c": 20, "time": "2020-02-12T22:10:00+07:00"}
    r = _readings(_ttn(_uplink(decoded)))[0]
    assert r.time == datetime(2020, 2, 12, 15, 10, tzinfo=UTC)
    assert r.time_from_gateway is False


def test_decoded_position_wins_over_the_registry_location() -> None:
    r = _readings(_ttn(_uplink({"temperature_c": 20, "latitude": 10.6, "longitude": 103.5})))[0]
    assert (r.lat, r.lon) == (10.6, 103.5)


def test_non_numeric_unmapped_fields_are_ignored() -> None:
    decoded = {"pm25_ugm3": 12, "status": "ok", "alarm": False, "raw": [1, 2], "cfg": {"a": 1}}
    assert _readings(_ttn(_uplink(decoded)))[0].metrics == {"pm25_ugm3": 12.0, "rssi_dbm": -35.0}


def test_ngsi_normalised_attribute_value_is_unwrapped() -> None:
    decoded = {"pm25_ugm3": {"type": "Number", "value": 12}}
    assert _readings(_ttn(_uplink(decoded)))[0].metrics["pm25_ugm3"] == 12.0


def test_mapped_field_with_a_unit_is_converted() -> None:
    readings = _readings(
        _ttn(_uplink({"waterLevel": 235}), kind="flood", mapping={"waterLevel": "water_level_m@cm"})
    )
    assert readings[0].metrics["water_level_m"] == pytest.approx(2.35)


def test_two_fields_mapping_to_one_metric_are_refused() -> None:
    mapping = {"t1": "temperature_c", "t2": "temperature_c"}
    rej = _rejected(_ttn(_uplink({"t1": 20, "t2": 21}), mapping=mapping))
    assert rej.reason == "invalid_structure"


def test_decoded_value_outside_the_range_is_out_of_range() -> None:
    assert _rejected(_ttn(_uplink({"humidity_pct": 140}))).reason == "out_of_range"


def test_decoded_payload_with_only_ignored_fields_is_no_metrics() -> None:
    rej = _rejected(_ttn(_uplink({"status": "ok"})))
    assert rej.reason == "no_metrics"
    assert "status" in rej.detail


def test_unknown_shipped_mapping_name_is_unknown_mapping() -> None:
    rej = _rejected(_ttn(TTS_UPLINK_EXAMPLE, mapping="fiware-nonsense"))
    assert rej.reason == "unknown_mapping"
    assert "fiware-air-quality" in rej.detail


def test_mapping_to_something_that_is_no_metric_is_invalid_mapping() -> None:
    rej = _rejected(_ttn(TTS_UPLINK_EXAMPLE, mapping={"temperature": "temp_celsius"}))
    assert rej.reason == "invalid_mapping"


# -- kind of an unregistered device -----------------------------------------------------------


def test_unregistered_device_kind_is_inferred_when_one_kind_fits() -> None:
    r = _readings(_ttn(_uplink({"ph": 7.1, "turbidity_ntu": 2}), kind=None))[0]
    assert r.kind == "water"


@pytest.mark.parametrize(
    ("decoded", "why"),
    [
        ({"temperature_c": 21}, "several kinds"),
        ({"battery_pct": 80}, "common to every kind"),
        ({"ph": 7, "pm25_ugm3": 3}, "no single kind"),
    ],
)
def test_unregistered_device_whose_kind_is_unclear_is_unknown_kind(
    decoded: dict[str, Any], why: str
) -> None:
    rej = _rejected(_ttn(_uplink(decoded), kind=None))
    assert rej.reason == "unknown_kind"
    assert why in rej.detail


def test_registered_kind_decides_and_a_metric_of_another_kind_is_unknown_metric() -> None:
    rej = _rejected(_ttn(_uplink({"ph": 7}), kind="air"))
    assert rej.reason == "unknown_metric"


@pytest.mark.parametrize("registered", ["native", "senml", "chirpstack"])
def test_uplink_for_a_device_registered_with_another_format_is_format_mismatch(
    registered: str,
) -> None:
    # A TTN integration's login may publish under its application for any device id; a
    # device that sends its own JSON (or comes through ChirpStack) is not its to speak for.
    profile = DeviceProfile(device_id="dev1", kind="air", payload_format=registered)  # type: ignore[arg-type]
    body = json.dumps(_uplink({"temperature_c": 21.5})).encode()
    rej = _rejected(decode(TOPIC, body, RECEIVED, lookup={"dev1": profile}.get))
    assert rej.reason == "format_mismatch"
    assert f"registered to send {registered!r}" in rej.detail and "'ttn'" in rej.detail


def test_native_and_senml_share_a_devices_own_topics_whichever_it_is_registered_with() -> None:
    senml = json.dumps([{"bn": "urn:dev:x:", "n": "temperature_c", "u": "Cel", "v": 21.5}])
    native = json.dumps({"metrics": {"temperature_c": 21.5}, "time": RECEIVED.isoformat()})
    for registered in ("native", "senml"):
        profile = DeviceProfile(device_id="d1", kind="air", payload_format=registered)  # type: ignore[arg-type]
        for payload in (senml, native):
            readings = _readings(
                decode(
                    "citywatch/air/d1/up", payload.encode(), RECEIVED, lookup={"d1": profile}.get
                )
            )
            assert readings[0].metrics["temperature_c"] == 21.5


# -- FIWARE AirQualityObserved through the shipped mapping ------------------------------------


def test_fiware_air_quality_example_converts_units_and_ignores_the_models_other_attributes() -> (
    None
):
    readings = _readings(_ttn(_uplink(FIWARE_AIR_QUALITY_EXAMPLE), mapping="fiware-air-quality"))
    m = readings[0].metrics
    assert m["temperature_c"] == 12.2
    assert m["humidity_pct"] == pytest.approx(54.0)  # 0.54 fraction
    assert m["co_ppm"] == pytest.approx(500 * 24.45 / 28.010 / 1000)  # µg/m³ at 25 °C
    assert m["so2_ppb"] == pytest.approx(11 * 24.45 / 64.066)
    assert set(m) == {"temperature_c", "humidity_pct", "co_ppm", "so2_ppb", "rssi_dbm"}
    # dateObserved is an hourly interval in UTC (FIWARE): stamped with its end.
    assert readings[0].time == datetime(2016, 3, 15, 12, 0, tzinfo=UTC)
    assert readings[0].time_from_gateway is False


# -- docs/devices.md examples decode as the page says -------------------------------------------


def test_every_example_in_docs_devices_md_decodes_as_documented() -> None:
    blocks = re.findall(r"```json\n(.*?)```", (REPO / "docs" / "devices.md").read_text(), re.S)
    native, senml, ttn, chirpstack = (b.encode() for b in blocks)
    r = _readings(decode("citywatch/water/buoy-otres-1/up", native, RECEIVED))[0]
    assert r.metrics == {"ph": 7.2, "turbidity_ntu": 3.1, "battery_pct": 88.0}
    assert (r.seq, r.time) == (42, datetime(2026, 11, 24, 10, 0, tzinfo=UTC))
    readings = _readings(decode("citywatch/air/urn-dev-ow-10e2073a01080063/up", senml, RECEIVED))
    assert [r.metrics for r in readings] == [
        {"humidity_pct": 20.0},
        {"humidity_pct": 20.3},
        {"humidity_pct": 20.7},
        {"battery_pct": 98.0},
        {"humidity_pct": 21.2},
    ]
    gauge = DeviceProfile(
        device_id="gauge-7",
        kind="flood",
        payload_format="ttn",
        field_mapping={"waterLevel": "water_level_m@cm", "battery": "battery_pct"},
    )
    r = _readings(
        decode(
            "v3/city-sensors@ttn/devices/gauge-7/up", ttn, RECEIVED, lookup={"gauge-7": gauge}.get
        )
    )[0]
    assert r.metrics == {"water_level_m": pytest.approx(2.35), "battery_pct": 91, "rssi_dbm": -35}
    assert (r.seq, r.lat, r.lon, r.time_from_gateway) == (1, 10.6271, 103.522, True)
    eui = "0101010101010101"
    air = DeviceProfile(
        device_id=eui,
        kind="air",
        payload_format="chirpstack",
        field_mapping={
            "pm2_5": "pm25_ugm3",
            "relativeHumidity": "humidity_pct@/",
            "temperature": "temperature_c",
        },
    )
    topic = f"application/17c82e96-be03-4f38-aef3-f83d48582d97/device/{eui}/event/up"
    r = _readings(decode(topic, chirpstack, RECEIVED, lookup={eui: air}.get))[0]
    assert r.metrics == {
        "pm25_ugm3": 35.2,
        "humidity_pct": pytest.approx(81.0),
        "temperature_c": 31.5,
        "rssi_dbm": -36.0,
    }
    assert r.seq == 12
