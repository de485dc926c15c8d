"""Prometheus metrics of the alerts service."""

from prometheus_client import Counter, Gauge

TRANSITIONS = Counter(
    "citywatch_alerts_transitions_total", "Alert transitions stored", ["state", "severity"]
)
PUBLISHED = Counter("citywatch_alerts_published_total", "Alert events published to Kafka")
READINGS = Counter("citywatch_alerts_readings_evaluated_total", "Readings evaluated")
ACTIVE = Gauge("citywatch_alerts_active", "Alerts currently firing or acknowledged")
READY = Gauge(
    "citywatch_alerts_ready", "1 when this instance leads and Kafka and the database are reachable"
)
RULES_RELOADED = Counter(
    "citywatch_alerts_rules_reloads_total", "Rules files loaded after a change"
)
RULES_REFUSED = Counter(
    "citywatch_alerts_rules_reload_failures_total", "Rules files refused (last good rules kept)"
)
STALE = Counter("citywatch_alerts_stale_readings_total", "Readings too old to open an alert")
SKEWED = Counter(
    "citywatch_alerts_clock_skewed_readings_total",
    "Readings held as clock-skewed: too far ahead of their stream's head to move it",
)
QUALITY_SKIPPED = Counter(
    "citywatch_alerts_quality_skipped_total", "Rule evaluations skipped for a QARTOD fail flag"
)
LEADER = Gauge(
    "citywatch_alerts_leader",
    "1 while this instance holds its group's leadership lock and evaluates rules; 0 on a standby",
)
LEADERSHIP_ACQUIRED = Counter(
    "citywatch_alerts_leadership_acquired_total", "Terms this instance began as the alerts leader"
)
LEADERSHIP_LOST = Counter(
    "citywatch_alerts_leadership_lost_total",
    "Terms that ended because the leader's lock session failed (it stepped down)",
)
