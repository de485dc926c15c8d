"""Derived metrics: a metric computed from another of the same reading. Pure: no I/O.

Most low-cost flood gauges do not measure the quantity CityWatch stores: an ultrasonic sensor
over a river measures the distance down to the water, a pressure transmitter the water's
pressure, a tipping-bucket gauge the rain of one interval. A device's registry entry (copied
from its profile, or set per device) lists `derived` declarations, applied in order after
unit conversion and calibration, so one may feed the next (tips -> rain_mm -> rain_mm_h):

- `level_from_distance`: `water_level_m` = mount_height_m - distance_m + datum_offset_m
  (parameters `mount_height_m`, `datum_offset_m` default 0);
- `level_from_pressure`: `water_level_m` = (p - p_baro) / (density * g) + datum_offset_m, p
  in Pa from `water_pressure_kpa` (`density_kgm3` default 1000; p_baro from the reading's
  `baro_metric` in hPa, else the parameter `baro_hpa`, else 0: a gauge pressure);
- `fill_from_distance`: `fill_level_pct` = 100 * (empty - distance) / (empty - full), within
  0..100 (`empty_distance_m`, `full_distance_m` default 0);
- `rain_rate`: `rain_mm_h` = rain_mm * 3600 / interval_s (`interval_s`);
- `rain_from_tips`: `rain_mm` = rain_tips * mm_per_tip (`mm_per_tip`).

The source metric is kept (a CTD keeps its depth, a gauge its raw distance); the derived
one is range-checked like any other. A reading without the source metric is left as it is.
Rain *accumulation* is the per-interval amount `rain_mm` itself: summing it over a window is
a query, not a reading. A counter that only ever grows (tips since power-on) needs the
previous reading and is not derived here: adapters keep no state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from schemas.adapters._values import checked
from schemas.device import Derivation
from schemas.errors import PayloadError
from schemas.reading import Reading
from schemas.registry import Kind

__all__ = ["GRAVITY", "derive", "derive_metrics"]

GRAVITY: Final = 9.80665  # m/s², standard gravity
_DEFAULTS: Final[dict[str, float]] = {"datum_offset_m": 0.0, "density_kgm3": 1000.0}


def _param(params: Mapping[str, float], name: str, what: Derivation) -> float:
    if name in params:
        return params[name]
    if name in _DEFAULTS:
        return _DEFAULTS[name]
    raise PayloadError(
        "missing_parameter",
        f"derived metric {what.type} needs the device parameter {name!r} "
        f"(set it with `citywatch devices add ... --param {name}=VALUE` or in the import file)",
    )


def derive_metrics(
    metrics: Mapping[str, float], derived: Sequence[Derivation], params: Mapping[str, float]
) -> dict[str, float]:
    """`metrics` with each declared derivation's target added (or replaced)."""
    out = dict(metrics)
    for d in derived:
        source = out.get(d.source_metric)
        if source is None:
            continue
        if d.type == "level_from_distance":
            value = _param(params, "mount_height_m", d) - source
            value += _param(params, "datum_offset_m", d)
        elif d.type == "level_from_pressure":
            baro_pa = 0.0
            if d.baro_metric is not None:
                if d.baro_metric not in out:
                    continue  # no barometric value in this reading: no compensated level
                baro_pa = out[d.baro_metric] * 100.0
            elif "baro_hpa" in params:
                baro_pa = params["baro_hpa"] * 100.0
            head = (source * 1000.0 - baro_pa) / (_param(params, "density_kgm3", d) * GRAVITY)
            value = head + _param(params, "datum_offset_m", d)
        elif d.type == "fill_from_distance":
            empty = _param(params, "empty_distance_m", d)
            full = params.get("full_distance_m", 0.0)
            if empty <= full:
                raise PayloadError(
                    "invalid_parameter",
                    f"empty_distance_m {empty:g} must be greater than full_distance_m {full:g}",
                )
            # A sensor a little nearer than "full" or further than "empty" is the bin's
            # limit, not an error: clamp to the physical 0..100 %.
            value = min(100.0, max(0.0, 100.0 * (empty - source) / (empty - full)))
        elif d.type == "rain_rate":
            interval = _param(params, "interval_s", d)
            if interval <= 0:
                raise PayloadError("invalid_parameter", f"interval_s {interval:g} must be > 0")
            value = source * 3600.0 / interval
        else:  # rain_from_tips
            value = source * _param(params, "mm_per_tip", d)
        out[d.target_metric] = value
    return out


def derive(
    readings: list[Reading],
    derived: Sequence[Derivation],
    params: Mapping[str, float],
    also: Sequence[Kind] = (),
) -> list[Reading]:
    """Each reading with its derived metrics, range-checked for the reading's kind (and the
    other kinds the device also reports)."""
    out: list[Reading] = []
    for reading in readings:
        metrics = derive_metrics(reading.metrics, derived, params)
        for d in derived:
            target = d.target_metric
            if target in metrics:
                checked(reading.kind, target, metrics[target], f"derived {d.type}", also)
        out.append(reading.model_copy(update={"metrics": metrics}))
    return out
