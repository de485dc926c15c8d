"""Device profiles and their conformance corpus (issue 13), derived metrics, the metric
catalog and the unmapped-field refusal. Pure: no broker.

tests/corpus/<profile>.json holds, for every shipped profile, its vendor's own decoded
example (copied from the codec file in The Things Network's device repository, with that
file's URL), the per-device parameters a real installation would set, and the rows the
reading must store. Each one is registered the way `citywatch devices add --profile` and
`devices import` register it (`profile_from_fields`), wrapped in The Things Stack's
documented uplink envelope and decoded by the gateway's entry point.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from schemas import Rejection
from schemas.adapters import decode
from schemas.adapters.derived import GRAVITY, derive_metrics
from schemas.device import Derivation, DeviceProfile
from schemas.registry import CATALOG, metric_spec
from services.registry.importer import profile_from_fields
from services.registry.profiles import load_profiles
from tests.adapter_contract import RECEIVED, _readings, _rejected
from tests.harness import REPO
from tests.test_adapter_ttn import TTS_UPLINK_EXAMPLE

CORPUS = REPO / "tests" / "corpus"
CASES = sorted(CORPUS.glob("*.json"))


def ttn_uplink(device_id: str, decoded: dict[str, Any]) -> tuple[str, bytes]:
    """The Things Stack docs' uplink example carrying `decoded` for `device_id`."""
    body = json.loads(json.dumps(TTS_UPLINK_EXAMPLE))
    body["end_device_ids"]["device_id"] = device_id
    body["uplink_message"]["decoded_payload"] = decoded
    return f"v3/app1@ttn/devices/{device_id}/up", json.dumps(body).encode()


def registered(case: dict[str, Any], device_id: str) -> DeviceProfile:
    params = "; ".join(f"{k}={v}" for k, v in case["device_params"].items())
    return profile_from_fields({"id": device_id, "profile": case["profile"], "params": params})


def test_every_shipped_profile_has_its_vendor_example_in_the_corpus_and_twenty_exist() -> None:
    profiles = load_profiles()
    assert {p.stem for p in CASES} == set(profiles)
    assert len(profiles) >= 20
    kinds = {p.kind for p in profiles.values()}
    assert kinds == {"water", "air", "flood", "litter"}
    for path in CASES:
        case = json.loads(path.read_text())
        assert case["source"].startswith("https://github.com/TheThingsNetwork/lorawan-devices/")
        assert profiles[path.stem].codec.startswith("https://")


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_profile_decodes_its_vendors_example_to_the_expected_rows(path: Path) -> None:
    case = json.loads(path.read_text())
    device_id = f"corpus-{path.stem}"
    profile = registered(case, device_id)
    topic, payload = ttn_uplink(device_id, case["decoded"])
    (reading,) = _readings(decode(topic, payload, RECEIVED, lookup={device_id: profile}.get))
    expected = {**case["rows"], "rssi_dbm": -35}  # the envelope's best gateway
    assert reading.metrics == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert reading.kind == profile.kind and reading.source == "ttn"


def test_a_profile_without_its_parameters_is_refused_at_registration_naming_them() -> None:
    with pytest.raises(ValueError, match="mount_height_m"):
        profile_from_fields({"id": "g-1", "profile": "decentlab-dl-mbx"})
    with pytest.raises(ValueError, match="not shipped"):
        profile_from_fields({"id": "g-1", "profile": "no-such-model"})


def test_profile_quality_defaults_land_in_the_device_overrides_under_its_own() -> None:
    own = {"water_level_m": {"spike": {"suspect": 0.2, "fail": 0.5}}}
    p = profile_from_fields(
        {
            "id": "g-1",
            "profile": "decentlab-dl-mbx",
            "params": "mount_height_m=3",
            "qc_overrides": json.dumps(own),
        }
    )
    assert p.qc_overrides["water_level_m"]["spike"] == {"suspect": 0.2, "fail": 0.5}
    assert p.qc_overrides["water_level_m"]["flat_line"]["tolerance"] == 0.001
    assert p.profile == "decentlab-dl-mbx" and p.kind == "flood"


def test_one_rejection_names_every_unmapped_decoded_field() -> None:
    profile = DeviceProfile(device_id="d-1", kind="water", payload_format="ttn")
    topic, payload = ttn_uplink("d-1", {"ph": 7.1, "a": 1, "b": {"value": 2}, "c": 3.5, "s": "ok"})
    rej = _rejected(decode(topic, payload, RECEIVED, lookup={"d-1": profile}.get))
    assert rej.reason == "unknown_metric"
    assert "'a', 'b', 'c'" in rej.detail and "'s'" not in rej.detail


def test_tips_become_rain_and_rain_a_rate_in_declaration_order() -> None:
    derived = (Derivation(type="rain_from_tips"), Derivation(type="rain_rate"))
    out = derive_metrics({"rain_tips": 12}, derived, {"mm_per_tip": 0.2, "interval_s": 300})
    assert out == pytest.approx({"rain_tips": 12, "rain_mm": 2.4, "rain_mm_h": 28.8})


def test_level_from_an_absolute_pressure_subtracts_the_readings_barometric_pressure() -> None:
    d = (Derivation(type="level_from_pressure", baro_metric="pressure_hpa"),)
    out = derive_metrics({"water_pressure_kpa": 121.325, "pressure_hpa": 1013.25}, d, {})
    assert out["water_level_m"] == pytest.approx(20_000 / (1000 * GRAVITY))
    # without a barometric value in the reading, no compensated level is made up
    assert "water_level_m" not in derive_metrics({"water_pressure_kpa": 121.3}, d, {})


def test_a_derived_level_outside_the_possible_range_refuses_the_message() -> None:
    profile = profile_from_fields(
        {"id": "g-2", "profile": "decentlab-dl-mbx", "params": "mount_height_m=50"}
    )
    topic, payload = ttn_uplink("g-2", {"distance": {"value": 1000}, "device_id": 1})
    rej = decode(topic, payload, RECEIVED, lookup={"g-2": profile}.get)
    assert isinstance(rej, Rejection) and rej.reason == "out_of_range"
    assert "level_from_distance" in rej.detail


def test_catalog_metrics_have_units_and_ranges_and_any_kind_may_report_them() -> None:
    assert {"co2_ppm", "tvoc_ppb", "pressure_hpa", "illuminance_lux", "redox_mv", "depth_m"} <= set(
        CATALOG
    )
    for kind in ("water", "air", "flood", "litter"):
        spec = metric_spec(kind, "depth_m")
        assert spec is not None and spec.unit == "m"
    # a kind's own metrics stay its own unless the device also reports that kind
    assert metric_spec("flood", "temperature_c") is None
    assert metric_spec("flood", "temperature_c", ("air",)) is not None


def test_one_senml_rejection_names_every_unmapped_record() -> None:
    pack = [{"bn": "d-1:", "n": "ph", "v": 7.1}, {"n": "foo", "v": 1}, {"n": "bar", "v": 2}]
    profile = DeviceProfile(device_id="d-1", kind="water", payload_format="senml")
    rej = _rejected(
        decode(
            "citywatch/water/d-1/up",
            json.dumps(pack).encode(),
            RECEIVED,
            lookup={"d-1": profile}.get,
        )
    )
    assert rej.reason == "unknown_metric"
    assert "'d-1:foo'" in rej.detail and "'d-1:bar'" in rej.detail
