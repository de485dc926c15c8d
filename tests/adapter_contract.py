"""The adapter contract: what every payload adapter must do, written once.

Each adapter's test class (native, SenML, TTN, ChirpStack) inherits `AdapterContract` and
supplies `decode` plus example payloads; pytest collects the inherited tests per adapter.
No broker, no database.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import ClassVar

from schemas import Reading, Rejection
from schemas.adapters import DEFAULT_MAX_PAYLOAD_BYTES

RECEIVED = datetime(2026, 11, 24, 10, 0, 5, tzinfo=UTC)


def _rejected(result: list[Reading] | Rejection) -> Rejection:
    assert isinstance(result, Rejection), f"expected a Rejection, got {result!r}"
    return result


def _readings(result: list[Reading] | Rejection) -> list[Reading]:
    assert not isinstance(result, Rejection), f"unexpected rejection: {result!r}"
    return result


class AdapterContract:
    """Tests every adapter must pass. Subclasses set the class attributes and `decode`."""

    source: ClassVar[str]
    valid_topic: ClassVar[str]
    valid_payload: ClassVar[bytes]
    expected_rows: ClassVar[int]

    def decode(
        self,
        topic: str,
        payload: bytes,
        received_at: datetime,
        max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    ) -> list[Reading] | Rejection:
        raise NotImplementedError

    def _assert_kept(self, rej: Rejection, topic: str, payload: bytes) -> None:
        assert rej.raw == payload
        assert rej.topic == topic
        assert rej.received_at == RECEIVED
        assert rej.detail

    def test_valid_payload_becomes_readings_in_utc_with_source(self) -> None:
        readings = _readings(self.decode(self.valid_topic, self.valid_payload, RECEIVED))
        assert len(readings) == self.expected_rows
        for r in readings:
            assert r.time.utcoffset() == timedelta(0)
            assert r.received_at == RECEIVED
            assert r.source == self.source
            assert r.metrics

    def test_non_utf8_payload_is_rejected_keeping_raw_topic_and_receive_time(self) -> None:
        payload = b"\xff\xfe\x00garbage"
        rej = _rejected(self.decode(self.valid_topic, payload, RECEIVED))
        assert rej.reason == "not_utf8"
        self._assert_kept(rej, self.valid_topic, payload)

    def test_non_json_payload_is_rejected_keeping_raw_topic_and_receive_time(self) -> None:
        payload = b"{not json"
        rej = _rejected(self.decode(self.valid_topic, payload, RECEIVED))
        assert rej.reason == "not_json"
        self._assert_kept(rej, self.valid_topic, payload)

    def test_oversized_payload_is_rejected_keeping_all_raw_bytes(self) -> None:
        limit = len(self.valid_payload) - 1
        rej = _rejected(self.decode(self.valid_topic, self.valid_payload, RECEIVED, limit))
        assert rej.reason == "payload_too_large"
        assert str(limit) in rej.detail
        self._assert_kept(rej, self.valid_topic, self.valid_payload)

    def test_payload_exactly_at_the_size_limit_is_accepted(self) -> None:
        limit = len(self.valid_payload)
        _readings(self.decode(self.valid_topic, self.valid_payload, RECEIVED, limit))
