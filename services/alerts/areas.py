"""Where an alert applies: the one builder of CAP `<area>` blocks, from the city's areas file.

A CAP message with one identifier must say the same thing whichever channel produced it:
`GET /cap/{id}.xml` and the Atom feed (services/alerts/api.py, from the alerts table) and
the webhook, e-mail and MQTT notices (services/alerts/delivery/notice.py, from the Kafka
event). Both call `CityAreas.cap_area` with the one thing they both have, the alert's
area (a city-file id such as `stueng-hav`, or a registry name such as `Stueng Hav`):

1. a known area (resolved by `schemas.city.City.resolve`, the one place where names and
   aliases become ids, so `Stueng Hav`, `stueng-hav` and `Stueng Hav (port and
   industrial coast)` are one area): that area's
   circle (its point and `radius_m`), its English name, its Khmer name (`name_km`) and its
   administrative geocodes (`geocodes`, e.g. `NCDD 1803`);
2. anything else (an area the file does not know, or none): the city's extent, a circle
   around the middle of the areas' points that reaches every area's edge, with the city's
   geocodes (`ISO3166-2 KH-18`). CAP needs a polygon or a circle, and an alert raised in
   the city applies within it: a coarse area is better for a relay than a message refused
   for want of one. It is named after the alert's own area label when there is one (a
   slug becomes words: `otres-2` -> `Otres 2`), else after the city.

The device's position is deliberately not used. The alerts table knows it (the registry's
lat/lon) but the event on `citywatch.alerts.v1` does not, so a circle around the device
would make the API's message and the delivered one differ under the same identifier.

Geocodes and circles in one `<area>` describe their union (CAP 1.2, section 3.2.4): an
area's geocode is therefore its own administrative unit (or, for a beach or river mouth, the
district containing it, the unit a relay such as EWS1294 addresses), never the province.

Pure apart from reading the areas file, once per path (`city_areas`, cached).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from schemas.city import DEFAULT_CITY_FILE, City, load_city
from services.alerts.model import Area, CapSource, Circle
from services.alerts.texts import nfc
from services.common.settings import Settings

__all__ = ["CapOrigin", "CityAreas", "cap_origin", "city_areas", "default_areas"]

# Kilometres per degree of latitude (WGS 84 mean); longitude degrees shrink by cos(lat).
_KM_PER_DEG = 111.32


def _label(area: str) -> str:
    """An area label as a name: registry ids are slugs (`otres-2` -> `Otres 2`)."""
    if " " in area or area[:1].isupper():
        return area.strip()
    return " ".join(p.capitalize() for p in re.split(r"[-_]+", area) if p) or area


@dataclass(frozen=True, slots=True)
class CityAreas:
    """The CAP areas of one city, by area id and name (see the module docstring's rule)."""

    city: City

    def cap_area(self, area: str | None) -> Area:
        """The CAP `<area>` of an alert whose area is `area` (id, name, or None)."""
        a = self.city.resolve(area)
        if a is not None:
            return Area(
                name=a.name,
                name_km=nfc(a.name_km) if a.name_km else None,
                circle=Circle(a.lat, a.lon, a.radius_m / 1000),
                geocodes=a.geocodes,
            )
        return Area(
            name=_label(area) if area and area.strip() else self.city.name,
            name_km=None if area and area.strip() else self._city_km(),
            circle=self.extent(),
            geocodes=self.city.geocodes,
        )

    def name_en(self, area: str | None) -> str | None:
        """The English name of a known area (by id or name) for a title, without the
        parenthesised remark (`Stueng Hav (port and industrial coast)` -> `Stueng Hav`);
        an unknown label as given, None as None."""
        a = self.city.resolve(area)
        if a is None:
            return area
        return re.sub(r"\s*\([^)]*\)\s*$", "", a.name).strip() or a.name

    def name_km(self, area: str | None) -> str | None:
        """The Khmer name of a known area (by id or name), else None."""
        a = self.city.resolve(area)
        return nfc(a.name_km) if a is not None and a.name_km else None

    def _city_km(self) -> str | None:
        return nfc(self.city.name_km) if self.city.name_km else None

    def extent(self) -> Circle:
        """A circle holding every area: centred on their bounding box (a mean point would
        lean towards where areas cluster, the coast here, and need a wider circle), out to
        the farthest area's edge.

        Equirectangular distances, accurate to well under 1% over a city; rounded up to the
        next 0.1 km so no area's edge falls outside by rounding.
        """
        areas = self.city.areas
        lat = round((min(a.lat for a in areas) + max(a.lat for a in areas)) / 2, 4)
        lon = round((min(a.lon for a in areas) + max(a.lon for a in areas)) / 2, 4)
        scale = math.cos(math.radians(lat))
        radius = max(
            math.hypot((a.lat - lat) * _KM_PER_DEG, (a.lon - lon) * _KM_PER_DEG * scale)
            + a.radius_m / 1000
            for a in areas
        )
        return Circle(lat, lon, math.ceil(radius * 10) / 10)


@cache
def _load(path: Path) -> CityAreas:
    return CityAreas(load_city(path))


def city_areas(path: str | Path | None = None) -> CityAreas:
    """The areas of the city in `path` (`settings.city_file`), read once per file.

    Raises `schemas.city.CityError` (a `ConfigError`) when the file is missing or bad:
    a service refuses to start rather than send alerts with no place.
    """
    return _load(Path(path or DEFAULT_CITY_FILE).resolve())


def default_areas() -> CityAreas:
    """The shipped city (Sihanoukville), for callers that are given no areas file."""
    return city_areas(DEFAULT_CITY_FILE)


@dataclass(frozen=True)
class CapOrigin:
    """Who publishes a process's CAP messages and for which city's areas. Built once per
    process from its settings (`cap_origin`), by the API and by delivery alike, so that one
    identifier carries one sender, one set of links and one `<area>` on every channel."""

    source: CapSource
    areas: CityAreas


def cap_origin(settings: Settings) -> CapOrigin:
    """The CAP origin of this deployment: sender, names, contact and public base URL from
    `settings.cap` (the base URL defaults to the alerts service's own address), areas from
    `settings.city_file`."""
    c = settings.cap
    return CapOrigin(
        source=CapSource(
            sender=c.sender,
            sender_name_en=c.sender_name_en,
            sender_name_km=c.sender_name_km,
            base_url=c.web_base_url or f"http://{settings.http_host}:{settings.alerts.http_port}",
            contact=c.contact,
        ),
        areas=city_areas(settings.city_file),
    )
