"""The MQTT -> Kafka gateway (`citywatch ingest`)."""

from services.ingest.gateway import AckPolicy, IngestService

__all__ = ["AckPolicy", "IngestService"]
