"""The alerts a scenario's truth asks for, from the simulator's noiseless models.

Flood stages come from `ScenarioRun.expectations()` (the crossings of each area's modelled
level). The other true conditions use the shipped rules' numbers (deploy/alerts/rules.yaml),
read off the same models: a river rising 0.3 m in the trailing hour (flood-rising-fast),
rain over 30 mm/h with a 0.2 m rise in the hour (flood-rain-and-rise), PM2.5 over the AQI
breakpoints 35.5 / 55.5 (air-aqi advisory / watch), turbidity over 50 NTU, and each silence
of at least 30 minutes (device-offline). Rules whose truth is not modelled here (stuck
gauges, NO2, SO2, pH, oxygen, litter) count any alert they raise as unfounded.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from services.evaluate.scoring import Expected
from simulators.run import ScenarioRun

__all__ = ["expected_alerts"]

OFFLINE_AFTER = timedelta(minutes=30)
_MINUTE = timedelta(minutes=1)


def _t(value: Any) -> datetime:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _edges(run: ScenarioRun, area: str, cond: list[bool]) -> list[tuple[datetime, datetime]]:
    """Each (start, end) run of True in a one-minute grid from the run's start."""
    out, start = [], None
    for i, c in enumerate(cond):
        t = run.start + _MINUTE * i
        if t > run.end:
            break
        if c and start is None:
            start = t
        elif not c and start is not None:
            out.append((start, t))
            start = None
    if start is not None:
        out.append((start, run.end))
    return out


def expected_alerts(run: ScenarioRun, silences: list[dict[str, Any]]) -> list[Expected]:
    """Every alert the scenario should raise (call after the run's messages were played,
    so `silences` is complete)."""
    exp = run.expectations()
    kinds = {(d.area.id, d.who.kind) for d in run.devices}
    out: list[Expected] = []
    for f in exp["flood"]:
        if not f["gauges"]:
            continue
        below = {c["level"]: _t(c["time"]) for c in f["crossings"] if c["direction"] == "below"}
        for c in f["crossings"]:
            if c["direction"] == "above":
                out.append(
                    Expected(
                        "flood-level",
                        f["area"],
                        c["level"],
                        _t(c["time"]),
                        None,
                        below.get(c["level"]),
                    )
                )
        levels = run.env.flood[f["area"]].levels
        rise = [lv - levels[max(0, i - 60)] for i, lv in enumerate(levels)]
        for s, e in _edges(run, f["area"], [r >= 0.3 for r in rise]):
            out.append(Expected("flood-rising-fast", f["area"], "watch", s, None, e))
        rain = [run.scenario.rain_mm_h(_MINUTE * i, f["area"]) for i in range(len(levels))]
        both = [r >= 30 and x >= 0.2 for r, x in zip(rain, rise, strict=True)]
        for s, e in _edges(run, f["area"], both):
            out.append(Expected("flood-rain-and-rise", f["area"], "warning", s, None, e))
    for key, severity in (("air_pm25_above_35_5", "advisory"), ("air_pm25_above_55_5", "watch")):
        for x in exp[key]:
            if (x["area"], "air") in kinds:
                out.append(
                    Expected("air-aqi", x["area"], severity, _t(x["first"]), None, _t(x["last"]))
                )
    for x in exp["water_turbidity_above_50"]:
        if (x["area"], "water") in kinds:
            out.append(
                Expected(
                    "water-turbidity-high",
                    x["area"],
                    "advisory",
                    _t(x["first"]),
                    None,
                    _t(x["last"]),
                )
            )
    for gap in silences:
        start, end = _t(gap["from"]), _t(gap["to"])
        if end - start >= OFFLINE_AFTER:
            out.append(
                Expected(
                    "device-offline",
                    gap["area"],
                    "advisory",
                    start + OFFLINE_AFTER,
                    gap["device_id"],
                    end,
                )
            )
    return out
