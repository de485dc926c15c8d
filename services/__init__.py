"""CityWatch's services and their shared plumbing; `services.cli` is the `citywatch` command."""

__all__: list[str] = []
