"""The Kafka -> PostgreSQL/TimescaleDB writer (`citywatch processor`)."""

from services.processor.writer import CommitPolicy, ProcessorService

__all__ = ["CommitPolicy", "ProcessorService"]
