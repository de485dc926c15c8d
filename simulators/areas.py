"""How a simulated city behaves: the city's areas (schemas/city.py) with a model per area.

The city itself (ids, names, circles, geocodes, flood levels) is the one every service
reads, `deploy/city/sihanoukville.yaml`. The simulator adds, per area id, what only a
simulation needs (`simulators/cities/sihanoukville.yaml`): how many devices of each kind
the area draws (weights), its road traffic and shipping, and for flood gauges how its
water rises with rain (`FloodModel`). The levels a scenario's expectations are measured
against are the city's own, so the simulator and the alerts judge by the same numbers.

A model file sits beside the city it describes by name (`<city file stem>.yaml` under
`simulators/cities/`); a city with no model file, or an area missing from it, draws one
device of each kind and gets a quiet gauge. For tests and one-off cities, `parse_city`
also takes one document with the model fields written on each area (`kinds`, `traffic`,
`ships`, `flood: {base_m, tide_m, response_m_per_mm, recession_h, watch, warning, danger}`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas import city as places
from schemas.city import FLOOD_LEVELS, AreaType, CityError
from schemas.registry import KINDS, Kind

__all__ = [
    "FLOOD_LEVELS",
    "MODELS_DIR",
    "Area",
    "AreasError",
    "City",
    "FloodModel",
    "load_city",
    "parse_city",
]

MODELS_DIR = Path(__file__).resolve().parent / "cities"
AreasError = CityError  # the simulator's name for a bad city or model file


@dataclass(frozen=True)
class FloodModel:
    """A gauge's water level: base + tide + storage filled by rain and drained over time.

    The storage is a linear reservoir (dS/dt = response * rain - S / recession), the
    simplest rainfall-runoff model that rises with rain and recedes exponentially after it.
    `watch`, `warning` and `danger` are the city's levels for the area.
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
    """One simulated area: the city's area (`place`) and how it behaves."""

    place: places.Area
    kinds: dict[Kind, float]
    traffic: float = 0.0
    ships: float = 0.0
    flood: FloodModel | None = None

    @property
    def id(self) -> str:
        return self.place.id

    @property
    def name(self) -> str:
        return self.place.name

    @property
    def type(self) -> AreaType:
        return self.place.type

    @property
    def lat(self) -> float:
        return self.place.lat

    @property
    def lon(self) -> float:
        return self.place.lon

    @property
    def radius_m(self) -> float:
        return self.place.radius_m

    @property
    def coastal(self) -> bool:
        return self.place.coastal


@dataclass(frozen=True)
class City:
    """A simulated city: the city (`place`) and its simulated areas, in the city's order."""

    place: places.City
    areas: tuple[Area, ...]
    source: str = field(default="", compare=False)

    @property
    def name(self) -> str:
        return self.place.name

    @property
    def utc_offset_h(self) -> float:
        return self.place.utc_offset_h

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


def _simulated(place: places.Area, raw: dict[str, Any] | None, where: str) -> Area:
    """`place` with the model in `raw` (kinds, traffic, ships, flood), defaults if None."""
    if raw is None:
        raw = {"kinds": dict.fromkeys(KINDS, 1.0)}
    kinds_raw = raw.get("kinds") or {}
    if not isinstance(kinds_raw, dict) or not set(kinds_raw) <= set(KINDS):
        raise AreasError(f"{where}: 'kinds' must map some of {KINDS} to weights")
    kinds: dict[Kind, float] = {k: _num(kinds_raw, k, where) for k in KINDS if k in kinds_raw}
    levels = place.flood_levels
    flood = None
    if isinstance(raw.get("flood"), dict):
        f = raw["flood"]
        if levels is None:
            raise AreasError(f"{where}: a flood model needs the area's flood_levels")
        flood = FloodModel(
            base_m=_num(f, "base_m", where),
            tide_m=_num(f, "tide_m", where, 0.0),
            response_m_per_mm=_num(f, "response_m_per_mm", where),
            recession_h=_num(f, "recession_h", where),
            **levels.as_dict(),
        )
        if flood.recession_h <= 0:
            raise AreasError(f"{where}: recession_h must be positive")
    elif kinds.get("flood"):
        # A gauge without a model would report nothing meaningful: give it a quiet one.
        tide = 0.0 if place.type == "district" else 0.3
        lv = levels or places.FloodLevels(2.0, 2.5, 3.0)
        flood = FloodModel(0.8, tide, 0.01, 3.0, lv.watch, lv.warning, lv.danger)
    return Area(
        place=place,
        kinds=kinds,
        traffic=_num(raw, "traffic", where, 0.0),
        ships=_num(raw, "ships", where, 0.0),
        flood=flood,
    )


def parse_city(data: Any, source: str = "<data>", model: Any = None) -> City:
    """Build a simulated city from a city document and a model document (`{areas: {id:
    {...}}}`); with no model, the model fields are read from each area of `data`."""
    place = places.parse_city(data, source)
    if model is not None:
        by_id = model.get("areas") if isinstance(model, dict) else None
        if not isinstance(by_id, dict):
            raise AreasError(f"{source}: the model needs a mapping of area ids under 'areas'")
        unknown = sorted(set(by_id) - place.ids())
        if unknown:
            raise AreasError(f"{source}: the model names areas the city lacks: {unknown}")
        raws: list[dict[str, Any] | None] = [by_id.get(a.id) for a in place.areas]
    else:
        raws = [raw for raw in data["areas"]]
    areas = tuple(
        _simulated(a, raw, f"{source}: areas[{i}] ({a.id})")
        for i, (a, raw) in enumerate(zip(place.areas, raws, strict=True))
    )
    return City(place=place, areas=areas, source=source)


def load_city(path: str | Path | None = None, model: str | Path | None = None) -> City:
    """The simulated city: the city file `path` (the shipped one when None) and its model
    (`model`, else `simulators/cities/<stem>.yaml` when it exists)."""
    file = Path(path) if path is not None else places.DEFAULT_CITY_FILE
    data = places.read_yaml(file)
    model_file = Path(model) if model is not None else MODELS_DIR / file.name
    if model is None and not model_file.exists():
        # A combined document (model fields on each area), or a city with no model.
        return parse_city(data, str(file))
    return parse_city(data, str(file), places.read_yaml(model_file))
