"""The device registry: which devices are the city's, their profiles and MQTT credentials.

- `store`: the `devices` table (asyncpg);
- `importer`: CSV and YAML registration files, checked row by row, applied all or nothing;
- `mosquitto`: password hashes, and Mosquitto's password and ACL files;
- `integrations`: network-server accounts (the `mqtt_integrations` table);
- `cli`: `citywatch devices add | import | list | show | disable | enable | provision`;
- `integrations_cli`: `citywatch integrations add | list | remove`.
"""

from services.registry.errors import (
    DeviceExists,
    DeviceNotFound,
    ImportFailed,
    RegistryError,
    RowProblem,
)

__all__ = ["DeviceExists", "DeviceNotFound", "ImportFailed", "RegistryError", "RowProblem"]
