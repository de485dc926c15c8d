"""The root of CityWatch's error hierarchy, the one error a payload can cause, and the
error of a bad configuration file (a city file, say) that `schemas` reads.

`CityWatchError` lives here, in the lowest layer, so that `schemas` can raise errors of the
hierarchy without importing `services`; `services.common.errors` builds the rest of the
hierarchy (configuration, upstream, state) on the same class.
"""

from __future__ import annotations

__all__ = ["CityWatchError", "ConfigError", "PayloadError"]


class CityWatchError(Exception):
    """Base of every error CityWatch raises on purpose."""


class ConfigError(CityWatchError, ValueError):
    """A setting, or a file a setting names, is missing or invalid."""


class PayloadError(CityWatchError):
    """A payload (or the topic it came on) cannot become readings.

    Adapters raise it and turn it into a `Rejection` before it leaves them: `reason` is the
    stable code on the rejected topic and in the metric, `detail` the sentence a device
    engineer reads there. `topic` is set where the topic is known and at fault.

    Not a `ValueError` on purpose: the helpers that raise it also catch the `ValueError`s of
    `json`, `float` and `datetime`, and must not swallow a reason already given.
    """

    def __init__(self, reason: str, detail: str, *, topic: str | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.topic = topic
