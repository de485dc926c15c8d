"""Exponential backoff with full jitter, interruptible by a stop event.

A fixed retry interval makes every gateway hit a recovering broker in the same second;
jitter spreads them out (AWS architecture blog, "Exponential Backoff And Jitter").
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

# One generator per process, shared by every Backoff: seeding a `random.Random` reads the
# OS entropy pool and fills 2.5 KB of state (tens of microseconds), and the ingest gateway
# makes a Backoff per message (most never retry). A profile of the gateway at saturation
# had 17 % of its CPU in that seeding. Jitter needs processes to differ, not each retry
# loop to have its own stream.
_SHARED_RNG = random.Random()


@dataclass
class Backoff:
    initial_s: float = 0.2
    maximum_s: float = 10.0
    attempt: int = 0
    _rng: random.Random = field(default=_SHARED_RNG, repr=False)

    def next_delay(self) -> float:
        # The exponent stops growing once the cap is reached: no overflow after hours of retries.
        cap = min(self.maximum_s, self.initial_s * (2 ** min(self.attempt, 32)))
        self.attempt += 1
        return self._rng.uniform(cap / 2, cap)

    def reset(self) -> None:
        self.attempt = 0

    async def wait(self, stop: asyncio.Event) -> bool:
        """Sleep the next delay; return True if `stop` was set meanwhile."""
        try:
            await asyncio.wait_for(stop.wait(), self.next_delay())
        except TimeoutError:
            return False
        return True
