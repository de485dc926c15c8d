"""The read API, live stream, operations centre page and residents' page (port 8104)."""

from services.api.service import ApiService

__all__ = ["ApiService"]
