"""The alerting service: rules, alert lifecycle, publishing (`citywatch alerts`).

`AlertsService` is imported on first use (PEP 562): every `citywatch` command builds its
argument parser from modules of this package (`services.alerts.tokens`), and importing the
service itself there put its whole import tree (delivery, HTTP clients) into the memory
of every other service, about 20 MB of the ingest gateway's RSS.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from services.alerts.service import AlertsService

__all__ = ["AlertsService"]


def __getattr__(name: str) -> Any:
    if name == "AlertsService":
        from services.alerts.service import AlertsService

        return AlertsService
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
