"""Where a simulated fleet stands: a city as a file of areas with coordinates.

Sihanoukville ships as the default (`simulators/areas/sihanoukville.yaml`); any other city
is one YAML file with the same fields. An area is a point with a radius, the kinds of
devices it hosts (as weights), and for flood gauges the model of its water level and the
three levels (watch, warning, danger) the scenario's expectations are measured against.

For alerts (services/alerts/areas.py builds CAP `<area>` blocks from this file) an area and
the city may also carry `name_km`, the name in Khmer script, and `geocodes`, administrative
codes as a mapping of CAP `valueName` to value (`{NCDD: "1801"}`). Codes are strings:
written unquoted, YAML would read `0801` as the number 801.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from schemas.registry import KINDS, Kind
from services.common.errors import ConfigError

AreaType = Literal["district", "beach", "river_mouth", "coast", "harbour"]
FLOOD_LEVELS: tuple[str, ...] = ("watch", "warning", "danger")
DEFAULT_AREAS = Path(__file__).resolve().parent / "areas" / "sihanoukville.yaml"


class AreasError(ConfigError):
    """The areas file is missing a field or has one that makes no sense."""


@dataclass(frozen=True)
class FloodModel:
    """A gauge's water level: base + tide + storage filled by rain and drained over time.

    The storage is a linear reservoir (dS/dt = response * rain - S / recession), the
    simplest rainfall-runoff model that rises with rain and recedes exponentially after it.
    """

    base_m: float
    tide_m: float
    response_m_per_mm: float
    recession_h: float
    watch: float
    warning: float
    danger: float

    def levels(self) -> dict[str, float]:
        return {"watch": self.watch, "warning": self.warning, "danger": self.danger}


@dataclass(frozen=True)
class Area:
    id: str
    name: str
    type: AreaType
    lat: float
    lon: float
    radius_m: float
    kinds: dict[Kind, float]
    traffic: float = 0.0
    ships: float = 0.0
    flood: FloodModel | None = None
    name_km: str | None = None
    # (CAP valueName, value) pairs in file order, e.g. (("NCDD", "1801"),).
    geocodes: tuple[tuple[str, str], ...] = ()

    @property
    def coastal(self) -> bool:
        """Sea water at the sensor: tides on the level, sea-water conductivity."""
        return self.type in ("beach", "coast", "harbour")


@dataclass(frozen=True)
class City:
    name: str
    utc_offset_h: float
    areas: tuple[Area, ...]
    source: str = field(default="", compare=False)
    name_km: str | None = None
    geocodes: tuple[tuple[str, str], ...] = ()

    def area(self, area_id: str) -> Area:
        for a in self.areas:
            if a.id == area_id:
                return a
        raise AreasError(f"no area {area_id!r} in {self.name}")


def _num(raw: dict[str, Any], key: str, where: str, default: float | None = None) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AreasError(f"{where}: {key!r} must be a number, not {value!r}")
    return float(value)


def _name_km(raw: dict[str, Any], where: str) -> str | None:
    value = raw.get("name_km")
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise AreasError(f"{where}: 'name_km' must be a non-empty string, not {value!r}")
    return value.strip() if value is not None else None


def _geocodes(raw: dict[str, Any], where: str) -> tuple[tuple[str, str], ...]:
    """`geocodes: {NCDD: "1801"}` as CAP `<geocode>` pairs, each name and value a string."""
    value = raw.get("geocodes") or {}
    if not isinstance(value, dict):
        raise AreasError(f"{where}: 'geocodes' must map code names to codes, not {value!r}")
    out: list[tuple[str, str]] = []
    for name, code in value.items():
        if not isinstance(name, str) or not isinstance(code, str) or not name or not code:
            msg = f"{where}: geocode {name!r}: {code!r} must be a non-empty string (quote codes)"
            raise AreasError(msg)
        out.append((name, code))
    return tuple(out)


def parse_city(data: Any, source: str = "<data>") -> City:
    """Validate a parsed areas document and build the `City` it describes."""
    if not isinstance(data, dict) or not isinstance(data.get("areas"), list):
        raise AreasError(f"{source}: expected a mapping with a list under 'areas'")
    areas: list[Area] = []
    seen: set[str] = set()
    for i, raw in enumerate(data["areas"]):
        where = f"{source}: areas[{i}]"
        if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
            raise AreasError(f"{where}: each area needs a string 'id'")
        if raw["id"] in seen:
            raise AreasError(f"{where}: duplicate id {raw['id']!r}")
        seen.add(raw["id"])
        kind_of_place = raw.get("type", "district")
        if kind_of_place not in get_args(AreaType):
            raise AreasError(f"{where}: type {kind_of_place!r} is not one of {get_args(AreaType)}")
        lat, lon = _num(raw, "lat", where), _num(raw, "lon", where)
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise AreasError(f"{where}: ({lat}, {lon}) is not a coordinate")
        kinds_raw = raw.get("kinds") or {}
        if not isinstance(kinds_raw, dict) or not set(kinds_raw) <= set(KINDS):
            raise AreasError(f"{where}: 'kinds' must map some of {KINDS} to weights")
        kinds: dict[Kind, float] = {k: _num(kinds_raw, k, where) for k in KINDS if k in kinds_raw}
        flood = None
        if isinstance(raw.get("flood"), dict):
            f = raw["flood"]
            flood = FloodModel(
                base_m=_num(f, "base_m", where),
                tide_m=_num(f, "tide_m", where, 0.0),
                response_m_per_mm=_num(f, "response_m_per_mm", where),
                recession_h=_num(f, "recession_h", where),
                watch=_num(f, "watch", where),
                warning=_num(f, "warning", where),
                danger=_num(f, "danger", where),
            )
            if not flood.watch < flood.warning < flood.danger:
                raise AreasError(f"{where}: flood levels must rise: watch < warning < danger")
            if flood.recession_h <= 0:
                raise AreasError(f"{where}: recession_h must be positive")
        elif kinds.get("flood"):
            # A gauge without a model would report nothing meaningful: give it a quiet one.
            tide = 0.0 if kind_of_place == "district" else 0.3
            flood = FloodModel(0.8, tide, 0.01, 3.0, 2.0, 2.5, 3.0)
        areas.append(
            Area(
                id=raw["id"],
                name=str(raw.get("name", raw["id"])),
                type=kind_of_place,
                lat=lat,
                lon=lon,
                radius_m=_num(raw, "radius_m", where, 1000.0),
                kinds=kinds,
                traffic=_num(raw, "traffic", where, 0.0),
                ships=_num(raw, "ships", where, 0.0),
                flood=flood,
                name_km=_name_km(raw, where),
                geocodes=_geocodes(raw, where),
            )
        )
    if not areas:
        raise AreasError(f"{source}: no areas")
    return City(
        name=str(data.get("city", "city")),
        utc_offset_h=_num(data, "utc_offset_h", source, 0.0),
        areas=tuple(areas),
        source=source,
        name_km=_name_km(data, source),
        geocodes=_geocodes(data, source),
    )


def load_city(path: str | Path | None = None) -> City:
    """The city in `path` (a YAML areas file), Sihanoukville when None."""
    file = Path(path) if path is not None else DEFAULT_AREAS
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise AreasError(f"cannot read areas file {file}: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise AreasError(f"{file}: not YAML: {exc}") from exc
    return parse_city(data, str(file))
