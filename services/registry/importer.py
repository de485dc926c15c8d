"""Reading device registrations from CSV and YAML files (and the CLI's `add` flags).

Pure: text in, `DeviceProfile`s out, no database. Every row is checked before anything is
written, and every bad row is reported with its line and reason (`ImportFailed`), so an
operator fixes a whole file in one round instead of one error per attempt.

CSV: a header row, then one device per row. Columns (any order; only `id` and `kind` are
required, `kind` not with a `profile`): `id`, `kind`, `name`, `lat`, `lon`, `area`,
`payload_format`, `field_mapping`,
`install_date` (YYYY-MM-DD), `calibration`, `status` (`active` or `disabled`), `simulated`
(`true`/`false`, `yes`/`no`, `1`/`0`: a simulated device's alerts are CAP `Exercise`),
`drinking_water` (the same values: a water device that measures a drinking-water point; only
these are called "drinking water", with boil-water advice, on the residents' page),
`profile` (a shipped device profile, `citywatch devices profiles`: it fills in the kind, format,
mapping, derived metrics and quality defaults the row leaves empty), `params` (per-device
parameters of derived metrics, `mount_height_m=4.2; datum_offset_m=1.5`), `derived` (derived
metric types, `level_from_distance; rain_rate`, or a JSON list), `measurements` (JSON),
`also_kinds` (other kinds whose metrics the device reports, `air; flood`).
`field_mapping` and `calibration` take JSON (`{"ph": -0.1}`) or `key=value` pairs separated
by `;` (`ph=-0.1; temperature_c=0.3`); `field_mapping` may also name a shipped mapping
(`fiware-air-quality`).

YAML: a list of devices (or `devices:` holding one), each a mapping with the same keys;
`field_mapping`, `calibration` and `qc_overrides` as nested mappings.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from schemas.adapters.mappings import mapping_problems
from schemas.city import City
from schemas.device import DEVICE_PARAMS, DeviceProfile
from schemas.registry import KINDS, metric_spec
from services.registry.errors import ImportFailed, RowProblem
from services.registry.mosquitto import SERVICE_ID_PREFIX, reserved_id
from services.registry.profiles import ProfileError, apply_profile, missing_params

__all__ = [
    "FIELDS",
    "parse_csv",
    "parse_file",
    "parse_yaml",
    "profile_from_fields",
    "resolve_area",
]

# The names a file may use for each field, and the profile field they fill.
_ALIASES: dict[str, str] = {
    "id": "device_id",
    "device_id": "device_id",
    "kind": "kind",
    "name": "name",
    "lat": "lat",
    "lon": "lon",
    "area": "area",
    "format": "payload_format",
    "payload_format": "payload_format",
    "mapping": "field_mapping",
    "field_mapping": "field_mapping",
    "install_date": "install_date",
    "calibration": "calibration",
    "qc_overrides": "qc_overrides",
    "status": "status",
    "simulated": "simulated",
    "drinking_water": "drinking_water",
    "profile": "profile",
    "params": "params",
    "derived": "derived",
    "measurements": "measurements",
    "also_kinds": "also_kinds",
}
FIELDS: tuple[str, ...] = tuple(dict.fromkeys(_ALIASES.values()))
_MAPPING_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
_IMPORT_STATUSES = ("active", "disabled")


def parse_file(path: Path, city: City | None = None) -> list[DeviceProfile]:
    """Parse a CSV (`.csv`) or YAML (`.yaml`, `.yml`) registration file; with `city`, each
    device's area is resolved to the city's area id (see `resolve_area`)."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM from spreadsheet exports
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportFailed(str(path), [RowProblem(0, f"cannot read the file: {exc}")]) from exc
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return parse_csv(text, source=str(path), city=city)
    if suffix in {".yaml", ".yml"}:
        return parse_yaml(text, source=str(path), city=city)
    raise ImportFailed(
        str(path), [RowProblem(0, f"unknown file type {suffix!r}: use .csv, .yaml or .yml")]
    )


def parse_csv(text: str, *, source: str = "<csv>", city: City | None = None) -> list[DeviceProfile]:
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise ImportFailed(source, [RowProblem(1, "the file is empty")]) from None
    unknown = [h for h in header if h not in _ALIASES]
    problems: list[RowProblem] = []
    if unknown:
        problems.append(RowProblem(1, f"unknown column(s) {unknown}; known: {sorted(_ALIASES)}"))
    rows: list[tuple[int, dict[str, Any]]] = []
    while True:
        line = reader.line_num + 1  # where the next record starts (a quoted cell may span lines)
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.append(RowProblem(line, f"not valid CSV: {exc}"))
            break
        if not any(c.strip() for c in cells):
            continue  # blank lines are allowed
        if len(cells) != len(header):
            problems.append(
                RowProblem(line, f"{len(cells)} cells, but the header has {len(header)} columns")
            )
            continue
        rows.append((line, {h: c.strip() for h, c in zip(header, cells, strict=True) if c.strip()}))
    return _build(rows, problems, source, city)


def parse_yaml(
    text: str, *, source: str = "<yaml>", city: City | None = None
) -> list[DeviceProfile]:
    # Compose first (nodes keep their line numbers), then build each device on its own.
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if isinstance(root, yaml.MappingNode):
            listed = [v for k, v in root.value if k.value == "devices"]
            root = listed[0] if listed else root
        if not isinstance(root, yaml.SequenceNode):
            line = root.start_mark.line + 1 if root is not None else 1
            raise ImportFailed(
                source, [RowProblem(line, "expected a list of devices (or `devices:` with one)")]
            )
        problems: list[RowProblem] = []
        rows: list[tuple[int, dict[str, Any]]] = []
        for item in root.value:
            line = item.start_mark.line + 1
            if not isinstance(item, yaml.MappingNode):
                problems.append(RowProblem(line, "a device must be a mapping of field: value"))
                continue
            fields = loader.construct_mapping(item, deep=True)
            rows.append((line, {str(k): v for k, v in fields.items()}))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        raise ImportFailed(source, [RowProblem(line, f"not valid YAML: {exc}")]) from exc
    finally:
        loader.dispose()
    return _build(rows, problems, source, city)


def _build(
    rows: list[tuple[int, dict[str, Any]]],
    problems: list[RowProblem],
    source: str,
    city: City | None,
) -> list[DeviceProfile]:
    profiles: list[DeviceProfile] = []
    first_line: dict[str, int] = {}
    for line, fields in rows:
        try:
            profile = profile_from_fields(fields, city)
        except ValueError as exc:
            problems.append(RowProblem(line, str(exc)))
            continue
        if profile.device_id in first_line:
            problems.append(
                RowProblem(
                    line,
                    f"device {profile.device_id!r} is also on line {first_line[profile.device_id]}",
                )
            )
            continue
        first_line[profile.device_id] = line
        profiles.append(profile)
    if problems:
        raise ImportFailed(source, sorted(problems, key=lambda p: p.line))
    if not profiles:
        raise ImportFailed(source, [RowProblem(0, "no devices in the file")])
    return profiles


_TRUE, _FALSE = ("true", "yes", "1"), ("false", "no", "0")


def _flag(name: str, text: str) -> bool:
    word = text.strip().lower()
    if word not in _TRUE + _FALSE:
        raise ValueError(f"{name} {text!r} must be one of {', '.join(_TRUE + _FALSE)}")
    return word in _TRUE


def resolve_area(label: str, city: City) -> str:
    """The city's id for an area label (id, name or alias: `City.resolve`, the one resolver),
    or ValueError naming the city's areas. Never a silent fallback: a device in an area the
    city does not know would be judged against other areas' flood levels."""
    area = city.resolve(label)
    if area is None:
        known = ", ".join(f"{a.id} ({a.name})" for a in city.areas)
        msg = f"area {label!r} is not an area of {city.name}; known areas: {known}"
        raise ValueError(msg)
    return area.id


def profile_from_fields(fields: Mapping[str, Any], city: City | None = None) -> DeviceProfile:
    """One device from loosely typed fields (CSV cells, YAML values, CLI flags); raises
    ValueError with a reason an operator can act on. With `city`, the area is stored as
    the city's area id (`resolve_area`)."""
    values: dict[str, Any] = {}
    for key, value in fields.items():
        target = _ALIASES.get(str(key).strip().lower())
        if target is None:
            raise ValueError(f"unknown field {key!r}; known: {sorted(_ALIASES)}")
        if value is None or value == "":
            continue
        values[target] = value
    if isinstance(values.get("params"), str):
        values["params"] = {
            k: _number(f"param {k!r}", v)
            for k, v in _text_mapping("params", values["params"]).items()
        }
    if isinstance(values.get("derived"), str):
        text = values["derived"].strip()
        values["derived"] = (
            _json("derived", text)
            if text.startswith("[")
            else [{"type": t.strip()} for t in text.split(";") if t.strip()]
        )
    if isinstance(values.get("also_kinds"), str):
        values["also_kinds"] = [k.strip() for k in values["also_kinds"].split(";") if k.strip()]
    if isinstance(values.get("measurements"), str):
        values["measurements"] = _json("measurements", values["measurements"])
    if isinstance(values.get("qc_overrides"), str):
        values["qc_overrides"] = _json("qc_overrides", values["qc_overrides"])
    if values.get("profile") is not None:
        try:
            values = apply_profile(str(values["profile"]), values)
        except ProfileError as exc:
            raise ValueError(str(exc)) from None
    for required in ("device_id", "kind"):
        if required not in values:
            raise ValueError(f"{'id' if required == 'device_id' else required} is missing")
    for name in ("device_id", "name", "area", "kind", "payload_format", "status"):
        if name in values and isinstance(values[name], int | float):
            values[name] = str(values[name])  # YAML reads `id: 1042` as a number
    for name in ("lat", "lon"):
        if isinstance(values.get(name), str):
            values[name] = _number(name, values[name])
    if isinstance(values.get("calibration"), str):
        values["calibration"] = {
            k: _number(f"calibration {k!r}", v)
            for k, v in _text_mapping("calibration", values["calibration"]).items()
        }
    if isinstance(values.get("field_mapping"), str):
        text = values["field_mapping"]
        if not (text.startswith("{") or "=" in text):
            if not _MAPPING_NAME.match(text):
                raise ValueError(
                    f"field_mapping {text!r} is neither a mapping nor a shipped mapping's name"
                )
        else:
            values["field_mapping"] = _text_mapping("field_mapping", text)
    for flag in ("simulated", "drinking_water"):
        if isinstance(values.get(flag), str | int) and not isinstance(values[flag], bool):
            values[flag] = _flag(flag, str(values[flag]))
    if city is not None and values.get("area") is not None:
        values["area"] = resolve_area(str(values["area"]), city)
    status = values.get("status", "active")
    if status not in _IMPORT_STATUSES:
        raise ValueError(f"status {status!r} must be one of {', '.join(_IMPORT_STATUSES)}")
    if values.get("kind") not in KINDS:
        raise ValueError(f"kind {values.get('kind')!r} must be one of {', '.join(KINDS)}")
    try:
        profile = DeviceProfile(**values)
    except ValidationError as exc:
        raise ValueError(_readable(exc)) from None
    _check_metrics(profile)
    return profile


def _check_metrics(p: DeviceProfile) -> None:
    if reserved_id(p.device_id):
        raise ValueError(
            f"id {p.device_id!r} is reserved for a CityWatch service account "
            f"(no device id may start with {SERVICE_ID_PREFIX!r})"
        )
    for metric in p.calibration:
        if metric_spec(p.kind, metric) is None:
            raise ValueError(f"calibration names {metric!r}, which is not a {p.kind} metric")
    if isinstance(p.field_mapping, dict):
        problems = mapping_problems(p.field_mapping, p.kind, p.also_kinds)
        if problems:
            raise ValueError(f"field_mapping: {'; '.join(problems)}")
    elif isinstance(p.field_mapping, str) and not _MAPPING_NAME.match(p.field_mapping):
        raise ValueError(f"field_mapping {p.field_mapping!r} is not a shipped mapping's name")
    unknown = sorted(set(p.params) - set(DEVICE_PARAMS))
    if unknown:
        raise ValueError(f"params: unknown {unknown}; known: {', '.join(DEVICE_PARAMS)}")
    missing = missing_params(p.derived, p.params)
    if missing:
        raise ValueError(
            f"its derived metrics need the parameter(s) {', '.join(missing)} "
            f"(e.g. params 'mount_height_m=4.2'; see `citywatch devices profiles`)"
        )
    for d in p.derived:
        for used in (d.source_metric, d.target_metric, d.baro_metric):
            if used is not None and metric_spec(p.kind, used, p.also_kinds) is None:
                raise ValueError(f"derived {d.type}: {used!r} is not a {p.kind} metric")


def _number(name: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{name} {text!r} is not a number") from None


def _json(name: str, text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{name} is not valid JSON: {exc}") from None


def _text_mapping(name: str, text: str) -> dict[str, str]:
    """`{"a": 1}` (JSON) or `a=1; b=2` as a dict of strings (numbers checked by the caller)."""
    text = text.strip()
    if text.startswith("{"):
        parsed = _json(name, text)
        if not isinstance(parsed, dict):
            raise ValueError(f"{name} must be a JSON object")
        return {str(k): str(v) for k, v in parsed.items()}
    out: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in text.split(";"))):
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"{name}: {pair!r} is not key=value")
        out[key.strip()] = value.strip()
    return out


def _readable(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(x) for x in err["loc"]) or "device"
        where = "id" if where == "device_id" else where
        parts.append(f"{where} {err['input']!r}: {err['msg']}")
    return "; ".join(parts)
