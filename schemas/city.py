"""The city CityWatch serves: its areas by id, their names, shapes, codes and flood levels.

One YAML file (`deploy/city/sihanoukville.yaml` ships; `settings.city_file` names another)
describes the city for every service: the alerts' CAP `<area>` and Khmer titles, the read
API's `/areas`, the residents' page, and the simulator (which adds its own model of how
each area's rivers respond to rain, `simulators/areas.py`). An area is a point with a
radius (`radius_m`), its names in English (`name`) and Khmer script (`name_km`), other
spellings people use (`aliases`), administrative `geocodes` (CAP `valueName` -> value) and,
for areas with flood gauges, three `flood_levels` (watch < warning < danger, metres above
the gauge datum).

Areas are referred to by id everywhere. A label someone typed (`Stueng Hav`, `stueng-hav`,
`Stueng Hav (port and industrial coast)`) is turned into an id in one place,
`City.resolve`, which compares labels ignoring case, punctuation and a parenthesised
remark; a label that matches no area resolves to None and the caller decides whether that
is an error.

Geocodes are strings: written unquoted, YAML would read `0801` as the number 801.
Keys this module does not know (the simulator's model fields) are left to their readers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, get_args

import yaml

from schemas.errors import ConfigError

__all__ = [
    "DEFAULT_CITY_FILE",
    "FLOOD_LEVELS",
    "Area",
    "AreaType",
    "City",
    "CityError",
    "FloodLevels",
    "WaterBody",
    "area_key",
    "load_city",
    "parse_city",
]

AreaType = Literal["district", "beach", "river_mouth", "coast", "harbour"]
# What a water-quality sensor in an area measures: the sea at beaches, coasts and harbours,
# brackish water where a river meets the sea, river water inland. None of it is drinking
# water; that is only a device registered as a drinking-water point (none is, yet).
WaterBody = Literal["sea", "estuary", "river"]
FLOOD_LEVELS: Final[tuple[str, ...]] = ("watch", "warning", "danger")
DEFAULT_CITY_FILE: Final = (
    Path(__file__).resolve().parent.parent / "deploy" / "city" / ("sihanoukville.yaml")
)


class CityError(ConfigError):
    """The city file is missing a field or has one that makes no sense."""


def area_key(label: str) -> str:
    """`Stueng Hav (port and industrial coast)`, `Stueng Hav` and `stueng-hav` -> `stueng-hav`."""
    bare = re.sub(r"\s*\(.*\)\s*$", "", label)
    return re.sub(r"[^a-z0-9]+", "-", bare.lower()).strip("-")


@dataclass(frozen=True, slots=True)
class FloodLevels:
    """An area's flood levels, metres above its gauges' datum: watch < warning < danger."""

    watch: float
    warning: float
    danger: float

    def as_dict(self) -> dict[str, float]:
        return {"watch": self.watch, "warning": self.warning, "danger": self.danger}


@dataclass(frozen=True, slots=True)
class Area:
    """One area of the city, as the city file describes it."""

    id: str
    name: str
    type: AreaType
    lat: float
    lon: float
    radius_m: float = 1000.0
    name_km: str | None = None
    aliases: tuple[str, ...] = ()
    # (CAP valueName, value) pairs in file order, e.g. (("NCDD", "1801"),).
    geocodes: tuple[tuple[str, str], ...] = ()
    flood_levels: FloodLevels | None = None

    @property
    def coastal(self) -> bool:
        """Sea water at the sensor: tides on the level, sea-water conductivity."""
        return self.type in ("beach", "coast", "harbour")

    @property
    def water(self) -> WaterBody:
        """The water a water-quality sensor here measures (the pages label it so)."""
        if self.coastal:
            return "sea"
        return "estuary" if self.type == "river_mouth" else "river"

    def labels(self) -> tuple[str, ...]:
        """Every label that names this area: its id, its name and its aliases."""
        return (self.id, self.name, *self.aliases)


@dataclass(frozen=True)
class City:
    name: str
    utc_offset_h: float
    areas: tuple[Area, ...]
    source: str = field(default="", compare=False)
    name_km: str | None = None
    geocodes: tuple[tuple[str, str], ...] = ()

    def area(self, area_id: str) -> Area:
        """The area with id `area_id`; `CityError` when there is none."""
        for a in self.areas:
            if a.id == area_id:
                return a
        raise CityError(f"no area {area_id!r} in {self.name}")

    def resolve(self, label: str | None) -> Area | None:
        """The area a label names (id, name or alias, see `area_key`), else None."""
        if not label:
            return None
        wanted = area_key(label)
        if not wanted:
            return None
        for a in self.areas:
            if any(area_key(x) == wanted for x in a.labels()):
                return a
        return None

    def ids(self) -> frozenset[str]:
        return frozenset(a.id for a in self.areas)


def _num(raw: dict[str, Any], key: str, where: str, default: float | None = None) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CityError(f"{where}: {key!r} must be a number, not {value!r}")
    return float(value)


def _name_km(raw: dict[str, Any], where: str) -> str | None:
    value = raw.get("name_km")
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise CityError(f"{where}: 'name_km' must be a non-empty string, not {value!r}")
    return value.strip() if value is not None else None


def _geocodes(raw: dict[str, Any], where: str) -> tuple[tuple[str, str], ...]:
    """`geocodes: {NCDD: "1801"}` as CAP `<geocode>` pairs, each name and value a string."""
    value = raw.get("geocodes") or {}
    if not isinstance(value, dict):
        raise CityError(f"{where}: 'geocodes' must map code names to codes, not {value!r}")
    out: list[tuple[str, str]] = []
    for name, code in value.items():
        if not isinstance(name, str) or not isinstance(code, str) or not name or not code:
            msg = f"{where}: geocode {name!r}: {code!r} must be a non-empty string (quote codes)"
            raise CityError(msg)
        out.append((name, code))
    return tuple(out)


def _aliases(raw: dict[str, Any], where: str) -> tuple[str, ...]:
    value = raw.get("aliases") or []
    if not isinstance(value, list) or not all(isinstance(x, str) and x.strip() for x in value):
        raise CityError(f"{where}: 'aliases' must be a list of names, not {value!r}")
    return tuple(x.strip() for x in value)


def _flood_levels(raw: dict[str, Any], where: str) -> FloodLevels | None:
    """`flood_levels: {watch, warning, danger}`; the simulator's combined files may carry
    the levels inside their `flood` model instead, read the same way."""
    block = raw.get("flood_levels")
    if block is None and isinstance(raw.get("flood"), dict) and "watch" in raw["flood"]:
        block = raw["flood"]
    if block is None:
        return None
    if not isinstance(block, dict):
        raise CityError(f"{where}: 'flood_levels' must map watch, warning, danger to metres")
    levels = FloodLevels(*(_num(block, name, where) for name in FLOOD_LEVELS))
    if not levels.watch < levels.warning < levels.danger:
        raise CityError(f"{where}: flood levels must rise: watch < warning < danger")
    return levels


def parse_city(data: Any, source: str = "<data>") -> City:
    """Validate a parsed city document and build the `City` it describes.

    Every id, name and alias must name one area only, so `City.resolve` is unambiguous.
    """
    if not isinstance(data, dict) or not isinstance(data.get("areas"), list):
        raise CityError(f"{source}: expected a mapping with a list under 'areas'")
    areas: list[Area] = []
    owner: dict[str, str] = {}
    for i, raw in enumerate(data["areas"]):
        where = f"{source}: areas[{i}]"
        if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
            raise CityError(f"{where}: each area needs a string 'id'")
        if any(a.id == raw["id"] for a in areas):
            raise CityError(f"{where}: duplicate id {raw['id']!r}")
        kind_of_place = raw.get("type", "district")
        if kind_of_place not in get_args(AreaType):
            raise CityError(f"{where}: type {kind_of_place!r} is not one of {get_args(AreaType)}")
        lat, lon = _num(raw, "lat", where), _num(raw, "lon", where)
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise CityError(f"{where}: ({lat}, {lon}) is not a coordinate")
        area = Area(
            id=raw["id"],
            name=str(raw.get("name", raw["id"])),
            type=kind_of_place,
            lat=lat,
            lon=lon,
            radius_m=_num(raw, "radius_m", where, 1000.0),
            name_km=_name_km(raw, where),
            aliases=_aliases(raw, where),
            geocodes=_geocodes(raw, where),
            flood_levels=_flood_levels(raw, where),
        )
        for label in area.labels():
            key = area_key(label)
            if owner.setdefault(key, area.id) != area.id:
                raise CityError(f"{where}: {label!r} already names area {owner[key]!r}")
        areas.append(area)
    if not areas:
        raise CityError(f"{source}: no areas")
    return City(
        name=str(data.get("city", "city")),
        utc_offset_h=_num(data, "utc_offset_h", source, 0.0),
        areas=tuple(areas),
        source=source,
        name_km=_name_km(data, source),
        geocodes=_geocodes(data, source),
    )


def read_yaml(path: str | Path) -> Any:
    """A YAML file's document, or `CityError` saying why it cannot be read."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise CityError(f"cannot read city file {file}: {exc}") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CityError(f"{file}: not YAML: {exc}") from exc


def load_city(path: str | Path | None = None) -> City:
    """The city in `path` (a YAML city file); the shipped Sihanoukville when None."""
    file = Path(path) if path is not None else DEFAULT_CITY_FILE
    return parse_city(read_yaml(file), str(file))
