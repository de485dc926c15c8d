"""Prometheus metrics of the ingest gateway."""

from prometheus_client import Counter, Gauge

RECEIVED = Counter("citywatch_ingest_received_total", "MQTT messages received")
ACCEPTED = Counter("citywatch_ingest_accepted_total", "MQTT messages decoded into readings")
READINGS = Counter("citywatch_ingest_readings_total", "Readings sent to Kafka")
REJECTED = Counter(
    "citywatch_ingest_rejected_total", "Payloads sent to the rejected topic", ["reason"]
)
ACKED = Counter("citywatch_ingest_acked_total", "MQTT messages acknowledged after Kafka acked them")
ACK_SKIPPED = Counter(
    "citywatch_ingest_ack_skipped_total",
    "Acks skipped because the MQTT connection changed (the broker redelivers those)",
)
KAFKA_ERRORS = Counter("citywatch_ingest_kafka_errors_total", "Failed Kafka deliveries (retried)")
IN_FLIGHT = Gauge("citywatch_ingest_in_flight", "Messages taken from MQTT and not yet acked")
READY = Gauge("citywatch_ingest_ready", "1 when MQTT and Kafka are both reachable")
