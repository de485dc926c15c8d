"""The alerting service: rules, alert lifecycle, publishing (`citywatch alerts`)."""

from services.alerts.service import AlertsService

__all__ = ["AlertsService"]
