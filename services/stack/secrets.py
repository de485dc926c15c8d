"""The local stack's generated passwords: one JSON file per part, mode 0600, in the state folder.

`citywatch stack up` writes them before it starts a part; the settings read them
(`services/common/settings.py`), so every CityWatch program logs in without a password on
its command line or in its environment.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from services.common.settings import read_accounts
from services.registry.mosquitto import locked, new_password

__all__ = ["ensure_accounts", "write_secret"]


def ensure_accounts(path: Path, names: Iterable[str], what: str) -> dict[str, str]:
    """The passwords in `path`, generating any of `names` that is missing (under a lock, so
    two `stack up` never draw two passwords for one account)."""
    with locked(path.parent, path.name):
        accounts = read_accounts(path, what)
        missing = [name for name in names if name not in accounts]
        if missing:
            accounts |= {name: new_password() for name in missing}
            write_secret(path, json.dumps(accounts, indent=2) + "\n")
    return accounts


def write_secret(path: Path, text: str) -> None:
    """Write `text` to `path` with mode 0600 from its first byte: under a temporary name
    created 0600, then renamed over `path` (a reader sees the old file or the whole new)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # a leftover temporary file keeps its own mode otherwise
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
