"""JSON Schema files for device engineers, generated from pydantic models. Pure: no I/O.

`citywatch schemas export` writes `schema_files()` into `schemas/json/`, and
tests/test_schemas_export.py fails when the committed files differ, so the published
schemas cannot drift from the registry and models they describe.

Files:
- `native-{kind}.schema.json`: the native payload on `citywatch/{kind}/{device_id}/up`
  (one reading or a list of them), with that kind's metrics, units and possible ranges;
- `native.schema.json`: the same for any kind, metrics as name: number;
- `reading.schema.json` / `rejected.schema.json`: the records on `citywatch.readings.v1`
  and `citywatch.rejected.v1`, for whoever consumes them.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, create_model

from schemas.adapters.native import MAX_READINGS_PER_MESSAGE
from schemas.reading import Reading, RejectedRecord
from schemas.registry import COMMON, KINDS, METRICS, Kind, MetricSpec
from schemas.topics import DEVICE_ID

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
ID_BASE = "https://citywatch.example/schemas/"


def _drop_default(schema: dict[str, Any]) -> None:
    # An optional member has no default on the wire: it is simply absent.
    schema.pop("default", None)


def _metric_field(spec: MetricSpec) -> Any:
    return (
        Annotated[float, Field(ge=spec.minimum, le=spec.maximum)],
        Field(
            default=None,
            description=f"{spec.description}, in {spec.unit}",
            json_schema_extra=_drop_default,
        ),
    )


def _optional(annotation: Any, description: str, **constraints: Any) -> Any:
    return (
        Annotated[annotation, Field(**constraints)],
        Field(default=None, description=description, json_schema_extra=_drop_default),
    )


_TIME = (
    "ISO 8601 date-time with a zone ('2026-11-24T17:00:00+07:00'), or Unix epoch seconds; "
    "without it, the gateway's receive time is used"
)


def native_reading_model(kind: Kind | None) -> type[BaseModel]:
    """The pydantic model of one native reading for `kind` (None: any kind)."""
    if kind is None:
        metrics: Any = (
            Annotated[dict[str, float], Field(min_length=1)],
            Field(description="metric name: value, in the registry's unit"),
        )
    else:
        metrics_model = create_model(
            f"{kind.title()}Metrics",
            __config__=ConfigDict(
                extra="forbid", title=f"{kind} metrics", json_schema_extra={"minProperties": 1}
            ),
            **{name: _metric_field(spec) for name, spec in {**METRICS[kind], **COMMON}.items()},
        )
        metrics = (metrics_model, Field(description="at least one metric of this kind"))
    title = f"CityWatch native {kind} reading" if kind else "CityWatch native reading"
    fields: dict[str, Any] = {
        "time": _optional(datetime | float, _TIME),
        "seq": _optional(int, "the device's message counter", ge=0),
        "metrics": metrics,
        "device_id": _optional(str, "must equal the topic's device id", pattern=DEVICE_ID.pattern),
        "kind": _optional(Literal[kind] if kind else Kind, "must equal the topic's kind"),
        "lat": _optional(float, "WGS84 latitude", ge=-90, le=90),
        "lon": _optional(float, "WGS84 longitude", ge=-180, le=180),
    }
    for name, spec in COMMON.items():
        fields[name] = _metric_field(spec)
    return create_model(
        f"Native{kind.title() if kind else ''}Reading",
        __config__=ConfigDict(extra="forbid", title=title),
        **fields,
    )


def _payload_schema(kind: Kind | None) -> dict[str, Any]:
    model = native_reading_model(kind)
    many: Any = Annotated[
        list[model],  # type: ignore[valid-type]
        Field(min_length=1, max_length=MAX_READINGS_PER_MESSAGE),
    ]
    adapter: TypeAdapter[Any] = TypeAdapter(model | many)
    schema = adapter.json_schema()
    name = f"native-{kind}" if kind else "native"
    topic_kind = kind or "{kind}"
    return {
        "$schema": SCHEMA_DIALECT,
        "$id": f"{ID_BASE}{name}.schema.json",
        "title": f"CityWatch native payload on citywatch/{topic_kind}/{{device_id}}/up",
        "description": (
            "One reading or a list of readings (a device that was offline may send a backlog). "
            "Values outside the ranges are refused; see docs/devices.md."
        ),
        **schema,
    }


def _model_schema(model: type[BaseModel], name: str, description: str) -> dict[str, Any]:
    return {
        "$schema": SCHEMA_DIALECT,
        "$id": f"{ID_BASE}{name}.schema.json",
        "description": description,
        **model.model_json_schema(),
    }


def schema_files() -> dict[str, str]:
    """File name -> JSON text, deterministic (sorted keys, two-space indent, final newline)."""
    documents: dict[str, dict[str, Any]] = {"native": _payload_schema(None)}
    for kind in KINDS:
        documents[f"native-{kind}"] = _payload_schema(kind)
    documents["reading"] = _model_schema(
        Reading, "reading", "A canonical reading on Kafka topic citywatch.readings.v1"
    )
    documents["rejected"] = _model_schema(
        RejectedRecord, "rejected", "A refused payload on Kafka topic citywatch.rejected.v1"
    )
    return {
        f"{name}.schema.json": json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        for name, doc in documents.items()
    }
