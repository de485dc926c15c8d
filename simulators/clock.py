"""The scenario clock: scenario time runs `speed` times faster than the wall clock.

Readings carry scenario time, so a six-hour storm at speed 360 plays in a minute and its
readings still span six hours. The clock also answers the reverse question (when, on the
wall clock, is a scenario instant due) for pacing and for knowing when the gateway will
receive a reading, which decides whether a skewed device clock reads as "from the future".
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class ScenarioClock:
    """Maps scenario instants to wall-clock instants; `speed` 0 means as fast as possible."""

    start: datetime  # scenario time at the first reading
    wall_start: datetime  # wall-clock time when the scenario starts playing
    speed: float = 0.0

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.wall_start.tzinfo is None:
            raise ValueError("scenario clock instants must carry a time zone")
        if self.speed < 0:
            raise ValueError("speed must be 0 (as fast as possible) or positive")

    def wall_at(self, scenario_time: datetime) -> datetime:
        """When a reading taken at `scenario_time` is due on the wall clock."""
        if self.speed == 0:
            return self.wall_start
        return self.wall_start + (scenario_time - self.start) / self.speed

    def scenario_at(self, wall: datetime) -> datetime:
        """The scenario time showing on the wall clock at `wall`."""
        if self.speed == 0:
            return self.start
        return self.start + (wall - self.wall_start) * self.speed

    def pace(self, scenario_time: datetime, monotonic_start: float) -> None:
        """Block until `scenario_time` is due (a pacing delay, not a synchronisation)."""
        if self.speed == 0:
            return
        due = monotonic_start + (scenario_time - self.start) / timedelta(seconds=1) / self.speed
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
