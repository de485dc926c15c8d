"""Alert rules: the YAML file's model and the pure threshold-with-hysteresis evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas.registry import Kind, metric_spec
from services.common.errors import ConfigError

Severity = Literal["advisory", "watch", "warning", "danger"]


class ThresholdRule(BaseModel):
    """Open when the value crosses `threshold`; resolve when it passes back beyond `clear`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    kind: Kind
    metric: str
    direction: Literal["above", "below"] = "above"
    threshold: float
    clear: float
    severity: Severity
    title_en: str
    title_km: str

    @model_validator(mode="after")
    def _coherent(self) -> ThresholdRule:
        if metric_spec(self.kind, self.metric) is None:
            raise ValueError(
                f"metric {self.metric!r} is not in the registry for kind {self.kind!r}"
            )
        if self.direction == "above" and self.clear > self.threshold:
            raise ValueError("for direction 'above', clear must be at or below threshold")
        if self.direction == "below" and self.clear < self.threshold:
            raise ValueError("for direction 'below', clear must be at or above threshold")
        for title in (self.title_en, self.title_km):
            try:
                title.format(value="1", unit="m", device="d")
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(
                    f"title {title!r} may use only {{value}}, {{unit}} and {{device}} ({exc!r})"
                ) from None
        return self

    def breached(self, value: float) -> bool:
        return value >= self.threshold if self.direction == "above" else value <= self.threshold

    def cleared(self, value: float) -> bool:
        return value < self.clear if self.direction == "above" else value > self.clear

    def unit(self) -> str:
        spec = metric_spec(self.kind, self.metric)
        return spec.unit if spec else ""

    def titles(self, value: float, device: str) -> tuple[str, str]:
        fields = {"value": f"{value:g}", "unit": self.unit(), "device": device}
        return self.title_en.format(**fields), self.title_km.format(**fields)


class RuleSet(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    rules: tuple[ThresholdRule, ...]

    @model_validator(mode="after")
    def _unique_ids(self) -> RuleSet:
        ids = [r.id for r in self.rules]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate rule ids: {dupes}")
        return self

    def for_metric(self, kind: str, metric: str) -> list[ThresholdRule]:
        return [r for r in self.rules if r.kind == kind and r.metric == metric]


def load_rules(path: Path) -> RuleSet:
    """Read and validate a rules file; every problem is a `ConfigError` naming the file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read alert rules {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"alert rules {path} are not valid YAML: {exc}") from exc
    try:
        return RuleSet.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"alert rules {path} are invalid:\n{exc}") from exc
