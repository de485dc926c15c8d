"""Alert evaluation: pure functions from (state, reading) to transitions. No I/O here.

State per (rule, device) is the newest reading time evaluated (the *cursor*) and the open
episode, if any. A reading at or before the cursor is a replay, a redelivery or a late
arrival and is not evaluated: alerting follows reading time, so replaying a stream after
an outage raises nothing new.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from schemas import Reading
from services.alerts.rules import RuleSet, ThresholdRule

# Alert ids are derived, not random: the same opening reading always yields the same id,
# so even a replay that slipped past the cursor could not create a second alert.
_ALERT_NAMESPACE = uuid.UUID("6f1c8a52-37a4-4d0e-9d0c-4c6b0e2f7a11")

Key = tuple[str, str]  # (rule_id, device_id)


@dataclass
class OpenEpisode:
    alert_id: uuid.UUID
    started_at: datetime


@dataclass
class RuleState:
    cursor: datetime | None = None
    open: OpenEpisode | None = None


@dataclass(frozen=True)
class Transition:
    kind: Literal["firing", "resolved"]
    alert_id: uuid.UUID
    rule: ThresholdRule
    device_id: str
    value: float
    at: datetime


@dataclass
class Evaluation:
    """What one batch changes: transitions to store and cursors to advance."""

    transitions: list[Transition] = field(default_factory=list)
    cursors: dict[Key, datetime] = field(default_factory=dict)


def alert_id_for(rule_id: str, device_id: str, started_at: datetime) -> uuid.UUID:
    return uuid.uuid5(_ALERT_NAMESPACE, f"{rule_id}|{device_id}|{started_at.isoformat()}")


def evaluate(rules: RuleSet, state: dict[Key, RuleState], readings: list[Reading]) -> Evaluation:
    """Evaluate a batch in order, updating `state` in place; return what must be stored."""
    out = Evaluation()
    for reading in readings:
        for metric, value in reading.metrics.items():
            for rule in rules.for_metric(reading.kind, metric):
                key = (rule.id, reading.device_id)
                st = state.setdefault(key, RuleState())
                if st.cursor is not None and reading.time <= st.cursor:
                    continue
                st.cursor = reading.time
                out.cursors[key] = reading.time
                if st.open is None and rule.breached(value):
                    aid = alert_id_for(rule.id, reading.device_id, reading.time)
                    st.open = OpenEpisode(aid, reading.time)
                    out.transitions.append(
                        Transition("firing", aid, rule, reading.device_id, value, reading.time)
                    )
                elif st.open is not None and rule.cleared(value):
                    out.transitions.append(
                        Transition(
                            "resolved",
                            st.open.alert_id,
                            rule,
                            reading.device_id,
                            value,
                            reading.time,
                        )
                    )
                    st.open = None
    return out
