"""Prometheus metrics of the alerts service."""

from prometheus_client import Counter, Gauge

TRANSITIONS = Counter(
    "citywatch_alerts_transitions_total", "Alert transitions stored", ["state", "severity"]
)
PUBLISHED = Counter("citywatch_alerts_published_total", "Alert events published to Kafka")
READINGS = Counter("citywatch_alerts_readings_evaluated_total", "Readings evaluated")
ACTIVE = Gauge("citywatch_alerts_active", "Alerts currently firing or acknowledged")
READY = Gauge("citywatch_alerts_ready", "1 when Kafka and the database are both reachable")
