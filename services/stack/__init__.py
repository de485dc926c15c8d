"""The local stack (Mosquitto, Kafka, PostgreSQL) as plain processes: `citywatch stack ...`."""

from services.stack.components import Component, Kafka, Mosquitto, Postgres, Status, components

__all__ = [
    "Component",
    "Kafka",
    "Mosquitto",
    "Postgres",
    "Status",
    "components",
    "stack_down",
    "stack_up",
]


def stack_up(settings: object, only: set[str] | None = None) -> list[Status]:
    from services.common.settings import Settings

    assert isinstance(settings, Settings)
    return [c.up() for c in components(settings) if only is None or c.name in only]


def stack_down(settings: object, only: set[str] | None = None) -> None:
    from services.common.settings import Settings

    assert isinstance(settings, Settings)
    for c in reversed(components(settings)):
        if only is None or c.name in only:
            c.down()
