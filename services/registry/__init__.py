"""The device registry: which devices are the city's, their profiles and MQTT credentials.

- `store`: the `devices` table (asyncpg);
- `importer`: CSV and YAML registration files, checked row by row, applied all or nothing;
- `mosquitto`: password hashes, and Mosquitto's password and ACL files;
- `cli`: `citywatch devices add | import | list | show | disable | enable | provision`.
"""

from services.registry.errors import (
    DeviceExists,
    DeviceNotFound,
    ImportFailed,
    RegistryError,
    RowProblem,
)

__all__ = ["DeviceExists", "DeviceNotFound", "ImportFailed", "RegistryError", "RowProblem"]
