"""Alert rules: the YAML file's model, validated by pydantic, refused with line and reason.

A rules file is a list of rules, each with a `type`:

- `threshold`: a value past `threshold` for at least `for`; cleared past `clear` (hysteresis).
- `rate_of_change`: a metric rising (falling) faster than `rate_per_hour` over `window`.
- `levels`: escalating stages on one metric (flood watch < warning < danger), optionally per
  area (`area_levels`); one alert whose severity goes up and down with the stage.
- `aqi`: the US EPA Air Quality Index from PM2.5 and PM10 (2024 PM2.5 breakpoints) over a
  NowCast or 24-hour average; one alert whose severity follows the category.
- `combined`: all `conditions` met by devices of one area within `window` (one alert per area).
- `offline`: a device that has sent nothing for `after`; `stuck`: a value that has not moved by
  `tolerance` for `after`.

Every rule has a scope (`kind`, `devices`, `areas`), `for` (how long the condition must hold
before an alert opens), `hold` (how long it must stay cleared before the alert de-escalates or
resolves), `status` (CAP: Actual, Test, Exercise) and texts in English and Khmer. The rule set
also names `stale_after`: see engine.py for the staleness rule.

What an alert may rest on (`confirm`, issue 14: no alert from one sample the quality checks
cannot yet judge). Every rule says which of two it uses:

- `persist`: opening and escalating need the stage asked for by `min_readings` consecutive
  readings (and, to open, for `for` of reading time). One sample that the checks passed,
  such as a simulated 180 mm/h rain spike, never opens anything. Default for every type,
  with `min_readings: 2` (offline and stuck rules persist by their own `after` duration).
  Per-area levels rules with `corroborate` may instead open on one reading that another
  device of the area confirms (two independent samples; LevelsRule says how).
- `final`: the rule acts on a reading only once its quality verdict is final, that is when
  the series' next reading has arrived and the centred spike test has judged it (QARTOD;
  services/quality), and a suspect verdict never starts an opening. For single-metric
  value rules (threshold, levels, rate_of_change); it costs one reporting interval.

Audience (`audience`): `public` (the default) or `operators`. Offline and stuck rules
default to `operators` (a device's own health), and so is any rule whose alert is a task
for a crew rather than advice to residents (the shipped `litter-boom-full`). The alert
stores it (`alerts.audience`) and the residents' page shows only `public` alerts.

Areas are the city's ids (`schemas/city.py`): `areas` and `area_levels` keys are checked
against the city file when the service loads the rules (`check_areas`), and an unknown id is a
load error, never a silent fallback to the default levels.

Loading: `yaml.compose` keeps each node's line, so a validation error names the line of the
offending value, not only its path; `load_rules` raises `ConfigError` with all of them.
"""

from __future__ import annotations

import itertools
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from schemas.city import City
from schemas.registry import Kind, metric_spec
from services.alerts.model import SEVERITIES, Audience, Severity, Status
from services.common.errors import ConfigError

__all__ = [
    "AQI_CATEGORIES",
    "AqiRule",
    "Audience",
    "CombinedRule",
    "Condition",
    "Corroboration",
    "LevelsRule",
    "OfflineRule",
    "Per",
    "RateRule",
    "Rule",
    "RuleSet",
    "Severity",
    "StuckRule",
    "ThresholdRule",
    "check_areas",
    "load_rules",
    "parse_duration",
    "parse_rules",
]

# US EPA AQI categories, in order (index 0 is Good).
AqiCategory = Literal[
    "good", "moderate", "unhealthy_sensitive", "unhealthy", "very_unhealthy", "hazardous"
]
AQI_CATEGORIES: tuple[AqiCategory, ...] = (
    "good",
    "moderate",
    "unhealthy_sensitive",
    "unhealthy",
    "very_unhealthy",
    "hazardous",
)

# One alert per device, or one per (rule, area) for the area's devices together.
Per = Literal["device", "area"]

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(value: Any) -> timedelta:
    """`10m`, `1h30m`, `45s`, `2d` or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return timedelta(seconds=value)
    if isinstance(value, str) and value and (m := _DURATION.match(value.strip())):
        d, h, mi, s = (int(x) if x else 0 for x in m.groups())
        return timedelta(days=d, hours=h, minutes=mi, seconds=s)
    raise ValueError(f"{value!r} is not a duration (like 10m, 1h30m, 45s or seconds)")


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
_TEMPLATE_FIELDS = {
    "value": "1",
    "unit": "m",
    "device": "d",
    "area": "a",
    "severity": "watch",
    "category": "c",
}


def _check_metric(kind: Kind | None, metric: str) -> None:
    if kind is None:
        raise ValueError(f"metric {metric!r} needs the rule's kind")
    if metric_spec(kind, metric) is None:
        raise ValueError(f"metric {metric!r} is not in the registry for kind {kind!r}")


class _Rule(BaseModel):
    """Fields every rule has: identity, scope, timing, status, texts."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    kind: Kind | None = None
    devices: tuple[str, ...] | None = None
    areas: tuple[str, ...] | None = None
    # The condition must hold this long (reading time) before an alert opens.
    for_: Duration = Field(default=timedelta(0), alias="for")
    # The alert de-escalates or resolves only after the condition has been lower this long.
    hold: Duration = timedelta(0)
    status: Status = "Actual"
    # What an opening rests on (module docstring): persistence over `min_readings` readings
    # (and `for`), or only values whose quality verdict is final.
    confirm: Literal["persist", "final"] = "persist"
    min_readings: int = Field(default=2, ge=1, le=100)
    # Who the alert is for (module docstring): the residents' page shows `public` alerts only.
    audience: Audience = "public"
    title_en: str
    title_km: str

    # Rule types that may act on final verdicts (one metric, one device, one value each).
    _FINAL_OK: ClassVar[bool] = False
    # Rule types whose condition is itself a duration (`after`): persistence is built in.
    _PERSIST_BUILT_IN: ClassVar[bool] = False

    @model_validator(mode="after")
    def _confirmation(self) -> Self:
        if self.confirm == "final" and not self._FINAL_OK:
            raise ValueError(
                f"confirm 'final' is for threshold, levels and rate_of_change rules; "
                f"a {self.type} rule needs confirm 'persist'"  # type: ignore[attr-defined]
            )
        if (
            self.confirm == "persist"
            and not self._PERSIST_BUILT_IN
            and self.min_readings < 2
            and self.for_ <= timedelta(0)
        ):
            raise ValueError(
                "confirm 'persist' needs min_readings of 2 or more or a positive 'for': "
                "one reading alone must not open an alert"
            )
        return self

    @model_validator(mode="after")
    def _titles(self) -> Self:
        for title in (self.title_en, self.title_km):
            try:
                title.format(**_TEMPLATE_FIELDS)
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(
                    f"title {title!r} may use only {{{'}, {'.join(_TEMPLATE_FIELDS)}}} ({exc!r})"
                ) from None
        return self

    def in_scope(self, device_id: str, kind: str, area: str | None) -> bool:
        if self.kind is not None and kind != self.kind:
            return False
        if self.devices is not None and device_id not in self.devices:
            return False
        return self.areas is None or area in self.areas

    def stages(self) -> tuple[Severity, ...]:
        """Severity of stage 1..n (stage 0 is "no alert")."""
        return (self.severity,)  # type: ignore[attr-defined]

    def metrics(self) -> tuple[str, ...]:
        return (self.metric,)  # type: ignore[attr-defined]

    def unit(self) -> str:
        metric = self.metrics()[0] if self.metrics() else None
        spec = metric_spec(self.kind, metric) if self.kind and metric else None
        return spec.unit if spec else ""


class ThresholdRule(_Rule):
    """Open when the value crosses `threshold` (for `for`); resolve past `clear` (for `hold`)."""

    _FINAL_OK: ClassVar[bool] = True

    type: Literal["threshold"] = "threshold"
    metric: str
    direction: Literal["above", "below"] = "above"
    threshold: float
    clear: float
    severity: Severity

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        _check_metric(self.kind, self.metric)
        if self.direction == "above" and self.clear > self.threshold:
            raise ValueError("for direction 'above', clear must be at or below threshold")
        if self.direction == "below" and self.clear < self.threshold:
            raise ValueError("for direction 'below', clear must be at or above threshold")
        return self

    def breached(self, value: float) -> bool:
        return value >= self.threshold if self.direction == "above" else value <= self.threshold

    def cleared(self, value: float) -> bool:
        return value < self.clear if self.direction == "above" else value > self.clear


class RateRule(_Rule):
    """Rising (falling) faster than `rate_per_hour`, measured over the last `window`."""

    _FINAL_OK: ClassVar[bool] = True

    type: Literal["rate_of_change"]
    metric: str
    direction: Literal["rising", "falling"] = "rising"
    rate_per_hour: float = Field(gt=0)
    # Cleared when the rate drops below this (hysteresis); half the rate when not given.
    clear_per_hour: float | None = Field(default=None, ge=0)
    window: Duration
    severity: Severity
    # `area`: one alert per area, raised when a device of it rises fast (per device, with
    # its own persistence), as levels rules' `per` (LevelsRule).
    per: Per = "device"

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        _check_metric(self.kind, self.metric)
        if self.window <= timedelta(0):
            raise ValueError("window must be positive")
        if self.clear_per_hour is not None and self.clear_per_hour > self.rate_per_hour:
            raise ValueError("clear_per_hour must be at or below rate_per_hour")
        return self

    @property
    def clear_rate(self) -> float:
        return self.rate_per_hour / 2 if self.clear_per_hour is None else self.clear_per_hour


class Corroboration(BaseModel):
    """A levels rule's check against the other devices of the area (`LevelsRule`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    window: Duration = timedelta(minutes=30)
    tolerance: float = Field(default=0.5, ge=0)


class LevelsRule(_Rule):
    """Stages on one metric, rising: `levels` maps severity to the level that enters it.

    `area_levels` gives an area its own levels (flood stages differ per gauge); a device in
    an area without its own uses `levels`, and when `levels` is left out, is not evaluated.
    A stage is left when the value drops `clear_margin` below its level (hysteresis).

    `corroborate` (issue 14: a drifting gauge alone does not raise a flood warning its
    area's other gauges contradict): a device may open or escalate to a stage only when,
    among the other devices of its area that reported within `corroborate.window` (of
    reading time, unflagged values), none is left or one reads at least the stage's level
    minus `corroborate.tolerance`. An area with one reporting gauge is judged on it alone;
    a real flood raises every gauge of the area, a drifting one only itself.

    `per: area` (issue 14: an area's flood is one alert, escalating as one CAP message
    thread): one alert per (rule, area) for the devices of that area, whose stage is the
    highest stage one of its devices supports; devices without an area keep their own
    alerts. A device supports a stage when its readings ask for it under the rule's
    confirmation: `min_readings` consecutive readings of that same device (persistence),
    or, with `corroborate`, its first reading at the stage when another device of the area
    that reported within the window reads at least the level minus the tolerance: two
    independent samples, so the alert opens on the crossing reading itself. With
    `corroborate`, a device whose recently reporting neighbours all read below that never
    supports the stage, however long it persists (the drift case). The area leaves a stage
    (after `hold`) when none of its devices that reported within the window still reads
    above the stage's level minus `clear_margin`.
    """

    _FINAL_OK: ClassVar[bool] = True

    type: Literal["levels"]
    metric: str
    levels: dict[Severity, float] | None = None
    area_levels: dict[str, dict[Severity, float]] = Field(default_factory=dict)
    clear_margin: float = Field(default=0.0, ge=0)
    corroborate: Corroboration | None = None
    per: Per = "device"

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        _check_metric(self.kind, self.metric)
        tables = ([self.levels] if self.levels else []) + list(self.area_levels.values())
        if not tables:
            raise ValueError("give levels, area_levels or both")
        names = self.stages()
        for table in tables:
            if tuple(s for s in SEVERITIES if s in table) != names:
                raise ValueError(f"every table of levels must name the same stages {names}")
            values = [table[s] for s in names]
            if any(a >= b for a, b in itertools.pairwise(values)):
                raise ValueError(f"levels must rise with severity ({dict(table)})")
        return self

    def stages(self) -> tuple[Severity, ...]:
        table = self.levels or next(iter(self.area_levels.values()))
        return tuple(s for s in SEVERITIES if s in table)

    def table(self, area: str | None) -> tuple[float, ...] | None:
        """The entry level of each stage for a device in `area` (None: not evaluated)."""
        own = self.area_levels.get(area) if area is not None else None
        chosen = own or self.levels
        return None if chosen is None else tuple(chosen[s] for s in self.stages())


_AQI_SEVERITY: dict[AqiCategory, Severity] = {
    "unhealthy_sensitive": "advisory",
    "unhealthy": "watch",
    "very_unhealthy": "warning",
    "hazardous": "danger",
}


class AqiRule(_Rule):
    """US EPA AQI from PM2.5 and PM10 over `averaging`; stages are categories from `alert_from`.

    `per: area`: one alert per (rule, area) for the air stations of that area, whose AQI is
    the highest of its stations' (each station's own NowCast over its own hours) and whose
    category leaves only when every station's has. Residents read one alert for their
    area: with one alert per station, two stations of Autonomous Port crossing into
    "unhealthy for sensitive groups" six minutes apart raised two identical-looking
    advisories for the same place (citywatch evaluate, normal day). A station without an
    area keeps its own alert.
    """

    type: Literal["aqi"]
    kind: Kind | None = "air"
    averaging: Literal["nowcast", "24h"] = "nowcast"
    alert_from: AqiCategory = "unhealthy_sensitive"
    # Severity per category at or above `alert_from` (categories left out take the next lower).
    severities: dict[AqiCategory, Severity] = Field(default_factory=lambda: dict(_AQI_SEVERITY))
    # A category is left when the AQI drops this far below its lower bound (hysteresis).
    clear_margin_aqi: float = Field(default=5.0, ge=0)
    per: Per = "device"

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        if self.kind != "air":
            raise ValueError("an aqi rule applies to kind 'air'")
        if self.alert_from == "good":
            raise ValueError("alert_from must be above 'good'")
        return self

    def categories(self) -> tuple[AqiCategory, ...]:
        """Stage 1..n as categories."""
        return AQI_CATEGORIES[AQI_CATEGORIES.index(self.alert_from) :]

    def stages(self) -> tuple[Severity, ...]:
        out: list[Severity] = []
        current: Severity = "advisory"
        for cat in self.categories():
            current = self.severities.get(cat, current)
            out.append(current)
        return tuple(out)

    def metrics(self) -> tuple[str, ...]:
        return ("pm25_ugm3", "pm10_ugm3")

    def unit(self) -> str:
        return "AQI"


# The default span of a combined rule's `rising_per_hour` condition (Condition says why).
RISE_OVER = timedelta(minutes=30)


class Condition(BaseModel):
    """One condition of a combined rule: a value above/below a level, a rise rate, or rain
    accumulated over a period.

    `accumulated_mm` with `over` (rain_mm_h only): the millimetres that fell in the last
    `over` of reading time, integrated from the intensity readings (engine.py says how),
    as weather services issue rain warnings (e.g. Hong Kong Observatory's amber rainstorm
    signal: 30 mm in an hour). One intensity spike between two readings adds only its
    share of the interval, so it cannot meet the condition alone.

    `rising_per_hour` is judged on one device's rise over at least `over` (default 30
    minutes): between two readings 5 minutes apart a gauge's 1 cm noise alone reads as
    0.24 m/h and met a 0.2 m/h condition several times a day; over 30 minutes it is
    0.03 m/h. A real rise of 0.2 m/h keeps that average for the whole span.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Kind
    metric: str
    above: float | None = None
    below: float | None = None
    rising_per_hour: float | None = Field(default=None, gt=0)
    accumulated_mm: float | None = Field(default=None, gt=0)
    over: Duration | None = None

    @model_validator(mode="after")
    def _one_test(self) -> Self:
        _check_metric(self.kind, self.metric)
        tests = (self.above, self.below, self.rising_per_hour, self.accumulated_mm)
        if len([x for x in tests if x is not None]) != 1:
            raise ValueError(
                "a condition has exactly one of above, below, rising_per_hour, accumulated_mm"
            )
        if self.accumulated_mm is not None:
            if self.metric != "rain_mm_h":
                raise ValueError("accumulated_mm integrates rain_mm_h readings only")
            if self.over is None or self.over <= timedelta(0):
                raise ValueError("accumulated_mm needs a positive 'over' (like 1h or 3h)")
        elif self.over is not None and self.rising_per_hour is None:
            raise ValueError("'over' goes with accumulated_mm or rising_per_hour")
        elif self.over is not None and self.over <= timedelta(0):
            raise ValueError("'over' must be positive")
        return self

    @property
    def rise_over(self) -> timedelta:
        """The span a `rising_per_hour` condition measures its rise over."""
        return self.over or RISE_OVER

    @property
    def level(self) -> float:
        for x in (self.above, self.below, self.rising_per_hour, self.accumulated_mm):
            if x is not None:
                return x
        raise AssertionError


class CombinedRule(_Rule):
    """Every condition met by some device of one area within `window` of reading time."""

    type: Literal["combined"]
    conditions: tuple[Condition, ...] = Field(min_length=2)
    window: Duration
    severity: Severity

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        if self.window <= timedelta(0):
            raise ValueError("window must be positive")
        return self

    def metrics(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c.metric for c in self.conditions))

    def unit(self) -> str:
        c = self.conditions[0]
        if c.accumulated_mm is not None:
            return "mm"
        spec = metric_spec(c.kind, c.metric)
        return spec.unit if spec else ""

    def in_scope(self, device_id: str, kind: str, area: str | None) -> bool:
        # Only devices with an area take part; kind is checked per condition.
        if area is None or (self.areas is not None and area not in self.areas):
            return False
        return self.devices is None or device_id in self.devices


class OfflineRule(_Rule):
    """A device silent for `after` (against its stream's head; see engine.py)."""

    _PERSIST_BUILT_IN: ClassVar[bool] = True
    min_readings: int = Field(default=1, ge=1, le=100)
    audience: Audience = "operators"  # a device's own health

    type: Literal["offline"]
    after: Duration
    severity: Severity

    def metrics(self) -> tuple[str, ...]:
        return ()

    def unit(self) -> str:
        return "min"


class StuckRule(_Rule):
    """A metric whose values stayed within `tolerance` (max - min) for `after`."""

    _PERSIST_BUILT_IN: ClassVar[bool] = True
    min_readings: int = Field(default=1, ge=1, le=100)
    audience: Audience = "operators"  # a device's own health

    type: Literal["stuck"]
    metric: str
    after: Duration
    tolerance: float = Field(default=1e-9, gt=0)
    severity: Severity

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        _check_metric(self.kind, self.metric)
        return self


Rule = Annotated[
    ThresholdRule | RateRule | LevelsRule | AqiRule | CombinedRule | OfflineRule | StuckRule,
    Field(discriminator="type"),
]


def _default_type(raw: Any) -> Any:
    """Rules written before rule types existed are thresholds."""
    if isinstance(raw, dict) and "type" not in raw:
        return {"type": "threshold", **raw}
    return raw


class RuleSet(BaseModel):
    """The rules file: rules and the staleness rule."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # A reading more than this behind its stream's head opens and escalates nothing.
    stale_after: Duration = timedelta(minutes=30)
    # Live data: a stream whose newest reading was at most this far behind the wall clock
    # when it arrived is live, and its offline clock is max(head, wall clock - live_lag),
    # so a partition whose devices all fall silent still reports them (engine.live_heads).
    # The lag allows for the pipeline's own delay. Replayed history is never live.
    live_lag: Duration = timedelta(minutes=2)
    # A reading more than this ahead of its stream's head, while other devices of the
    # stream keep reporting, is held as clock-skewed: one device's clock never moves the
    # stream's "now" (engine.evaluate, "Clock skew").
    clock_skew: Duration = timedelta(minutes=15)
    rules: tuple[Annotated[Rule, BeforeValidator(_default_type)], ...]

    @model_validator(mode="after")
    def _unique_ids(self) -> RuleSet:
        ids = [r.id for r in self.rules]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate rule ids: {dupes}")
        return self

    def by_id(self, rule_id: str) -> Rule | None:
        return next((r for r in self.rules if r.id == rule_id), None)


# -- loading with line numbers ----------------------------------------------------------


Path_ = tuple[str | int, ...]


def _lines(node: yaml.Node, path: Path_, out: dict[Path_, int]) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            out[(*path, key.value)] = key.start_mark.line + 1
            _lines(value, (*path, key.value), out)
            out[(*path, key.value)] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _lines(item, (*path, i), out)


def _line_of(loc: tuple[str | int, ...], lines: dict[tuple[str | int, ...], int]) -> int | None:
    """The line of the deepest part of a pydantic error location that exists in the file
    (pydantic puts the union tag in the path: `rules.0.levels.levels`; skip such parts)."""
    best: int | None = None
    path: tuple[str | int, ...] = ()
    for part in loc:
        if (*path, part) in lines:
            path = (*path, part)
            best = lines[path]
    return best


def parse_rules(text: str, source: str = "<rules>") -> RuleSet:
    """Validate the text of a rules file; `ConfigError` names each problem's line and reason."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"alert rules {source} are not valid YAML: {exc}") from exc
    if node is None or not isinstance(data, dict):
        raise ConfigError(f"alert rules {source}: line 1: expected a mapping with 'rules'")
    lines: dict[tuple[str | int, ...], int] = {}
    _lines(node, (), lines)
    try:
        return RuleSet.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            line = _line_of(loc, lines)
            where = ".".join(str(p) for p in loc) or "(top)"
            problems.append(f"line {line or '?'}: {where}: {err['msg']}")
        raise ConfigError(f"alert rules {source} are invalid:\n  " + "\n  ".join(problems)) from exc


def check_areas(rules: RuleSet, city: City, source: str = "<rules>") -> RuleSet:
    """Refuse rules naming an area the city does not have: `areas` and `area_levels` are
    keyed by area id (schemas/city.py). A name or alias is refused too, with its id, so a
    typo never silently leaves a gauge on the default levels."""
    problems: list[str] = []
    ids = city.ids()
    for rule in rules.rules:
        named = list(rule.areas or ())
        if isinstance(rule, LevelsRule):
            named += list(rule.area_levels)
        for label in named:
            if label in ids:
                continue
            known = city.resolve(label)
            hint = (
                f"write its id {known.id!r}"
                if known is not None
                else f"the city's areas are {', '.join(sorted(ids))}"
            )
            problems.append(
                f"rule {rule.id}: area {label!r} is not an area id of {city.name}; {hint}"
            )
    if problems:
        msg = f"alert rules {source} name unknown areas:\n  " + "\n  ".join(problems)
        raise ConfigError(msg)
    return rules


def load_rules(path: Path, city: City | None = None) -> RuleSet:
    """Read and validate a rules file; every problem is a `ConfigError` naming file and line.

    With `city`, area ids are checked against it too (`check_areas`)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read alert rules {path}: {exc}") from exc
    rules = parse_rules(text, str(path))
    return rules if city is None else check_areas(rules, city, str(path))
