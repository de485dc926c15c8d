"""Device profiles: one YAML file per device model in deploy/devices/profiles/ (issue 13).

A profile says how a model's decoded uplink becomes CityWatch readings: the kind, the payload
format, the field mapping (`field: metric@unit`, `-` to ignore), the derived metrics, the
layout of a decoder's measurement list, per-metric quality defaults and where the vendor's
codec comes from. Registering a device with `--profile NAME` (or a `profile` column or key in
an import file) copies all of it into the device's registry entry, under anything the entry
sets itself: the gateway and the processor read only the registry, and `devices show` shows
what a device really uses. Re-importing applies an updated profile.

A new model is one file here plus its vendor's example in tests/corpus/ (docs/devices.md).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas.adapters.mappings import mapping_problems
from schemas.device import (
    DERIVATION_PARAMS,
    DEVICE_PARAMS,
    Derivation,
    MeasurementList,
    PayloadFormat,
)
from schemas.registry import Kind, metric_spec
from services.quality.qartod import MetricQc

__all__ = [
    "PROFILES_DIR",
    "ModelProfile",
    "ProfileError",
    "apply_profile",
    "load_profile",
    "load_profiles",
    "missing_params",
]

PROFILES_DIR: Final = Path(__file__).resolve().parents[2] / "deploy" / "devices" / "profiles"


class ProfileError(ValueError):
    """A profile file that is wrong, or a name no file has; the message says which and why."""


class ModelProfile(BaseModel):
    """One device model's profile file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")
    vendor: str
    model: str
    description: str
    kind: Kind
    # Other kinds whose metrics the model also reports (a weather station: flood and air).
    also_kinds: tuple[Kind, ...] = ()
    payload_format: PayloadFormat = "ttn"
    # Where the decoder and its example payloads come from (the vendor's codec).
    codec: str = Field(pattern=r"^https://")
    field_mapping: dict[str, str] = Field(default_factory=dict)
    derived: tuple[Derivation, ...] = ()
    measurements: MeasurementList | None = None
    # Defaults for per-device parameters (e.g. a probe's fixed density); a device's own win.
    params: dict[str, float] = Field(default_factory=dict)
    # Per-metric QARTOD defaults for this model, {metric: {test: {parameter: value}}}:
    # copied into the device's qc_overrides, under the device's own.
    quality: dict[str, dict[str, dict[str, float]]] = Field(default_factory=dict)

    def problems(self) -> list[str]:
        """What in the profile a device of its kind could not use."""
        out = mapping_problems(self.field_mapping, self.kind, self.also_kinds)
        for d in self.derived:
            for metric in (d.source_metric, d.target_metric, d.baro_metric):
                if metric is not None and metric_spec(self.kind, metric, self.also_kinds) is None:
                    out.append(f"derived {d.type}: {metric!r} is not a {self.kind} metric")
        out.extend(
            f"params: unknown parameter {p!r}" for p in self.params if p not in DEVICE_PARAMS
        )
        for metric, tests in self.quality.items():
            if metric_spec(self.kind, metric, self.also_kinds) is None:
                out.append(f"quality: {metric!r} is not a {self.kind} metric")
            try:
                MetricQc.model_validate(tests)
            except ValidationError as exc:
                out.append(f"quality.{metric}: {exc.errors()[0]['msg']}")
        return out


def load_profile(path: Path) -> ModelProfile:
    """Parse and check one profile file; its name must be the file's stem."""
    try:
        body = yaml.safe_load(path.read_text(encoding="utf-8"))
        profile = ModelProfile.model_validate(body)
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise ProfileError(f"device profile {path}: {exc}") from exc
    if profile.name != path.stem:
        raise ProfileError(f"device profile {path}: name {profile.name!r} is not the file's stem")
    problems = profile.problems()
    if problems:
        raise ProfileError(f"device profile {path}: {'; '.join(problems)}")
    return profile


@cache
def load_profiles(directory: Path = PROFILES_DIR) -> dict[str, ModelProfile]:
    """Every profile in `directory`, by name."""
    return {p.stem: load_profile(p) for p in sorted(directory.glob("*.yaml"))}


def missing_params(derived: tuple[Derivation, ...], params: dict[str, float]) -> list[str]:
    """The parameters the derivations need that `params` does not give."""
    needed = (p for d in derived for p in DERIVATION_PARAMS[d.type])
    return sorted({p for p in needed if p not in params})


def apply_profile(name: str, values: dict[str, Any]) -> dict[str, Any]:
    """`values` (a device's fields, loosely typed) completed from profile `name`: what the
    device sets itself wins; params and quality defaults merge key by key.

    Raises:
        ProfileError: no profile has that name (the message lists the shipped ones).
    """
    profiles = load_profiles()
    profile = profiles.get(name)
    if profile is None:
        raise ProfileError(
            f"profile {name!r} is not shipped (`citywatch devices profiles` lists them: "
            f"{', '.join(sorted(profiles))})"
        )
    out = dict(values)
    out.setdefault("kind", profile.kind)
    out.setdefault("payload_format", profile.payload_format)
    if profile.also_kinds:
        out.setdefault("also_kinds", list(profile.also_kinds))
    if profile.field_mapping:
        out.setdefault("field_mapping", dict(profile.field_mapping))
    if profile.derived:
        out.setdefault("derived", [d.model_dump(exclude_none=True) for d in profile.derived])
    if profile.measurements is not None:
        out.setdefault("measurements", profile.measurements.model_dump())
    out["params"] = {**profile.params, **(out.get("params") or {})}
    own_qc = out.get("qc_overrides") or {}
    out["qc_overrides"] = {
        metric: {**tests, **own_qc.get(metric, {})} for metric, tests in profile.quality.items()
    } | {m: t for m, t in own_qc.items() if m not in profile.quality}
    return out
