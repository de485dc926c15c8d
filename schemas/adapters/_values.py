"""The value checks every adapter shares: strict JSON, numbers, times and positions.

Each helper returns the checked value or raises `PayloadError` with the reason code and the
detail sentence the rejected topic carries; `what`/`name`/`source` say where in the payload
the value stood. Pure: no I/O.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from schemas.adapters.units import convert
from schemas.errors import PayloadError
from schemas.registry import Kind, MetricSpec, metric_spec

__all__ = [
    "check_size",
    "checked",
    "epoch",
    "finite",
    "in_range",
    "is_number",
    "load_json",
    "parse_time",
    "position",
    "sequence_number",
    "to_registry_unit",
]


def check_size(payload: bytes, max_bytes: int) -> None:
    """Refuse a payload above `max_bytes` before anything parses it."""
    if len(payload) > max_bytes:
        raise PayloadError(
            "payload_too_large", f"payload is {len(payload)} bytes; the limit is {max_bytes}"
        )


def _reject_constant(name: str) -> float:
    # Python's json accepts NaN/Infinity, which are not JSON (RFC 8259) and not measurements.
    raise PayloadError("not_finite", f"{name} is not a JSON number")


# `json.loads(text, parse_constant=...)` builds a new decoder (and its scanner) on every
# call; one decoder with the same settings decodes the same way (json/__init__.py) and saves
# that on every message the gateway takes.
_STRICT_JSON = json.JSONDecoder(parse_constant=_reject_constant)


def load_json(payload: bytes) -> Any:
    """Parse a payload as strict JSON, turning every failure into `PayloadError`."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(
            "not_utf8", f"payload is not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    try:
        if text.startswith("\ufeff"):  # as json.loads says it, which the decoder leaves out
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        return _STRICT_JSON.decode(text)
    except json.JSONDecodeError as exc:
        raise PayloadError(
            "not_json", f"payload is not JSON: {exc.msg} at line {exc.lineno} col {exc.colno}"
        ) from None
    except RecursionError:
        raise PayloadError("not_json", "payload nests JSON too deeply") from None
    except ValueError as exc:  # e.g. an integer longer than Python's 4300-digit limit
        raise PayloadError("not_json", f"payload is not usable JSON: {exc}") from None


def is_number(value: Any) -> bool:
    """A JSON number (bool is an int subclass in Python, but not a number in JSON)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def finite(name: str, value: Any) -> float:
    """`value` as a finite float, or `PayloadError` naming `name`."""
    if not is_number(value):
        raise PayloadError("wrong_type", f"{name} must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        raise PayloadError("out_of_range", f"{name} is too large to be a measurement") from None
    if not math.isfinite(number):
        raise PayloadError("not_finite", f"{name} is not finite")
    return number


def checked(kind: Kind, metric: str, value: float, source: str, also: Sequence[Kind] = ()) -> float:
    """Range-check a value already in the registry unit; `source` names where it came from;
    `also` are the other kinds whose metrics the device reports (`DeviceProfile.also_kinds`)."""
    spec = metric_spec(kind, metric, also)
    if spec is None:
        raise PayloadError(
            "unknown_metric", f"{source}: metric {metric!r} is not in the registry for {kind!r}"
        )
    if not math.isfinite(value):
        raise PayloadError("out_of_range", f"{source}: {metric!r} converts to a non-finite value")
    return in_range(spec, f"{source}: {metric!r}", value)


def in_range(spec: MetricSpec, what: str, value: float) -> float:
    """`value` if it is physically possible for the metric (`spec`'s range), else `out_of_range`."""
    if not spec.accepts(value):
        raise PayloadError(
            "out_of_range",
            f"{what} = {value:g} {spec.unit} is outside the possible range "
            f"[{spec.minimum:g}, {spec.maximum:g}]",
        )
    return value


def to_registry_unit(metric: str, value: float, unit: str | None, source: str) -> float:
    try:
        return convert(metric, value, unit)
    except PayloadError as exc:
        raise PayloadError(exc.reason, f"{source}: {exc.detail}") from None


def epoch(seconds: float, what: str) -> datetime:
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        raise PayloadError("bad_time", f"{what} {seconds!r} is out of range") from None


def parse_time(
    value: Any, what: str = "time", *, assume_utc: bool = False, interval: bool = True
) -> datetime:
    """ISO 8601 with a zone, epoch seconds, or (with `interval`) an ISO 8601 interval `start/end`.

    An interval (FIWARE's `dateObserved` of an averaged observation) is stamped with its end,
    the instant the averaged value became known, as air quality agencies report hourly means.
    The native format has no intervals: it passes `interval=False`, and one is `bad_time`.
    """
    if is_number(value):
        return epoch(finite(what, value), what)
    if not isinstance(value, str):
        raise PayloadError(
            "bad_time", f"{what} must be ISO 8601 text or epoch seconds, got {type(value).__name__}"
        )
    text = value.rpartition("/")[2] if interval and "/" in value else value
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise PayloadError("bad_time", f"{what} {value!r} is not ISO 8601") from None
    if parsed.tzinfo is None and assume_utc:
        parsed = parsed.replace(tzinfo=UTC)
    if parsed.tzinfo is None:
        raise PayloadError(
            "time_without_zone", f"{what} {value!r} has no time zone (add 'Z' or '+07:00')"
        )
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise PayloadError("bad_time", f"{what} {value!r} is out of range in UTC") from None


def sequence_number(value: Any, name: str) -> int | None:
    """A sequence number (native `seq`, a LoRaWAN frame counter): absent, or an int >= 0."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise PayloadError(
            "invalid_structure", f"{name} must be a non-negative integer, got {value!r}"
        )
    return value


def position(lat: Any, lon: Any) -> tuple[float | None, float | None]:
    """A checked (lat, lon) pair; either may be None."""
    out: list[float | None] = []
    for name, coord, bound in (("lat", lat, 90), ("lon", lon, 180)):
        if coord is None:
            out.append(None)
            continue
        number = finite(name, coord)
        if abs(number) > bound:
            raise PayloadError("invalid_structure", f"{name} must be a number within ±{bound}")
        out.append(number)
    return out[0], out[1]
