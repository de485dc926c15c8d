"""Simulated sensor fleets and scenarios for demos, rehearsals, tests and benchmarks."""

from simulators.areas import Area, City, load_city
from simulators.clock import ScenarioClock
from simulators.faults import FAULTS, FaultRates
from simulators.fleet import Fleet, Message
from simulators.formats import FORMATS, Format
from simulators.publisher import Publisher, PublishStats
from simulators.run import RunStats, ScenarioRun
from simulators.scenarios import Scenario, available, load_scenario

__all__ = [
    "FAULTS",
    "FORMATS",
    "Area",
    "City",
    "FaultRates",
    "Fleet",
    "Format",
    "Message",
    "PublishStats",
    "Publisher",
    "RunStats",
    "Scenario",
    "ScenarioClock",
    "ScenarioRun",
    "available",
    "load_city",
    "load_scenario",
]
