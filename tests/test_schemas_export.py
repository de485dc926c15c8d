"""The JSON Schema files in schemas/json/ are what `citywatch schemas export` writes today:
a change to the registry or the models without re-exporting fails here."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from schemas.export import native_reading_model, schema_files
from tests.harness import REPO

JSON_DIR = REPO / "schemas" / "json"


def test_committed_schema_files_are_exactly_the_exported_ones() -> None:
    expected = schema_files()
    committed = {p.name: p.read_text(encoding="utf-8") for p in JSON_DIR.glob("*.json")}
    assert sorted(committed) == sorted(expected), "run `citywatch schemas export`"
    stale = [name for name, text in expected.items() if committed[name] != text]
    assert not stale, f"stale schema files {stale}: run `citywatch schemas export`"


def test_every_exported_file_is_a_2020_12_json_schema_with_an_id() -> None:
    for name, text in schema_files().items():
        doc = json.loads(text)
        assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema", name
        assert doc["$id"].endswith(name)


def test_kind_schema_carries_the_registry_ranges_and_units() -> None:
    doc = json.loads(schema_files()["native-water.schema.json"])
    ph = doc["$defs"]["WaterMetrics"]["properties"]["ph"]
    assert (ph["minimum"], ph["maximum"]) == (0, 14)
    assert "pH" in ph["description"]
    assert doc["$defs"]["WaterMetrics"]["additionalProperties"] is False


def test_design_example_payload_is_valid_for_its_kind_model() -> None:
    model = native_reading_model("water")
    model.model_validate(
        {"time": "2026-11-24T10:00:00Z", "seq": 42, "metrics": {"ph": 7.2, "turbidity_ntu": 3.1}}
    )


@pytest.mark.parametrize(
    "body",
    [
        {"metrics": {"pm25_ugm3": 3}},  # another kind's metric
        {"metrics": {"ph": 19}},  # outside the range
        {"metrics": {"ph": 7}, "firmware": "1.2"},  # unknown member
        {"metrics": {"ph": 7}, "kind": "air"},
    ],
)
def test_kind_model_refuses_what_the_native_adapter_refuses(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        native_reading_model("water").model_validate(body)
