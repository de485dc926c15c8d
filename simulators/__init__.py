"""Simulated sensor fleets for demos, tests and benchmarks."""

from simulators.fleet import Fleet, Message
from simulators.publisher import Publisher, PublishStats

__all__ = ["Fleet", "Message", "PublishStats", "Publisher"]
