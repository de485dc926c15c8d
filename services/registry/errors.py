"""The registry's errors: an operator asked for something the registry cannot do as asked.

They derive from `CityWatchError` (and `ValueError`, since the input is at fault), so the
CLI prints their message, which says what to do, and exits with status 2.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.common.errors import CityWatchError

__all__ = ["DeviceExists", "DeviceNotFound", "ImportFailed", "RegistryError", "RowProblem"]


class RegistryError(CityWatchError, ValueError):
    """A registry command cannot be carried out as given; the message says why."""


class DeviceNotFound(RegistryError):
    def __init__(self, device_id: str) -> None:
        super().__init__(
            f"device {device_id!r} is not registered (see `citywatch devices list`, "
            "or register it with `citywatch devices add`)"
        )
        self.device_id = device_id


class DeviceExists(RegistryError):
    def __init__(self, device_id: str, status: str) -> None:
        super().__init__(
            f"device {device_id!r} is already registered ({status}); change it by importing "
            "a file that lists it (`citywatch devices import`), which updates it in place"
        )
        self.device_id = device_id


@dataclass(frozen=True)
class RowProblem:
    """One bad row of an import file: where it is and what is wrong with it."""

    line: int
    reason: str


class ImportFailed(RegistryError):
    """An import file has bad rows; nothing of it was applied."""

    def __init__(self, source: str, problems: list[RowProblem]) -> None:
        listing = "\n".join(f"  {source}:{p.line}: {p.reason}" for p in problems)
        super().__init__(
            f"import of {source} refused: {len(problems)} problem(s), nothing was applied\n"
            f"{listing}"
        )
        self.source = source
        self.problems = problems
