"""Alert delivery: MQTT retained state, signed webhooks, e-mail, reminders and escalation."""

from services.alerts.delivery.config import SubscribersFile, load_subscribers
from services.alerts.delivery.notice import AlertEvent, build_notice
from services.alerts.delivery.service import DeliveryService

__all__ = ["AlertEvent", "DeliveryService", "SubscribersFile", "build_notice", "load_subscribers"]
