"""Bearer tokens for the alerts API, and `citywatch alerts-token create / revoke / list`.

A token is `cwa_` + 43 URL-safe characters (32 random bytes from `secrets`). It is printed
once, when it is made; the database keeps only its SHA-256 (`api_tokens.token_sha256`),
so neither a database dump nor a log line can be replayed as a token. The prefix lets a
secret scanner (or a person) recognise a leaked CityWatch token. Unsalted SHA-256 is the
right tool for 256 random bits: salting and slow hashes defend guessable passwords, and
a plain digest lets the API find the token with one index lookup.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import re
import secrets
import sys
from typing import Any, Final, TextIO

from services.alerts import api_queries as q
from services.common import db
from services.common.settings import Settings

__all__ = ["TOKEN_PREFIX", "add_parser", "cmd_alerts_token", "new_token", "token_digest"]

TOKEN_PREFIX: Final = "cwa_"
# The same rule as the CHECK on api_tokens.name (migration 0005): names end up in
# alerts.acknowledged_by and in logs, so they stay short and printable.
_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


def new_token() -> str:
    """A fresh bearer token (32 random bytes, URL-safe base64, with the CityWatch prefix)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> bytes:
    """The SHA-256 of a token as stored: what the API compares a presented token by."""
    return hashlib.sha256(token.encode()).digest()


async def _create(con: db.Conn, name: str, out: TextIO) -> int:
    token = new_token()
    if not await q.create_token(con, name, token_digest(token)):
        print(
            f"token {name!r} exists; revoke it first (citywatch alerts-token revoke {name})",
            file=sys.stderr,
        )
        return 1
    print(token, file=out)
    print(
        f"token {name!r} created. It is shown only now: store it in a secret manager. "
        'Use it as "Authorization: Bearer <token>" on POST /alerts/{id}/ack.',
        file=sys.stderr,
    )
    return 0


async def _revoke(con: db.Conn, name: str, out: TextIO) -> int:
    if not await q.revoke_token(con, name):
        print(f"no live token named {name!r}", file=sys.stderr)
        return 1
    print(f"token {name!r} revoked", file=out)
    return 0


async def _list(con: db.Conn, out: TextIO) -> int:
    for row in await q.list_tokens(con):
        state = f"revoked {row['revoked_at']:%Y-%m-%d %H:%M}" if row["revoked_at"] else "live"
        used = f"{row['last_used_at']:%Y-%m-%d %H:%M}" if row["last_used_at"] else "never"
        print(
            f"{row['name']:<24} {state:<22} created {row['created_at']:%Y-%m-%d %H:%M}"
            f"  last used {used}",
            file=out,
        )
    return 0


def cmd_alerts_token(settings: Settings, args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """`citywatch alerts-token ACTION [NAME]`: the token goes to stdout, the advice to stderr,
    so `TOKEN=$(citywatch alerts-token create ops-desk)` captures only the token."""
    name: str | None = getattr(args, "name", None)
    if name is not None and not _NAME.match(name):
        print(
            f"token name {name!r}: 1-64 letters, digits or ._@- (starting with a letter or digit)",
            file=sys.stderr,
        )
        return 2

    async def main() -> int:
        con = await db.connect(settings.database_dsn)
        try:
            if args.token_action == "create":
                assert name is not None
                return await _create(con, name, out)
            if args.token_action == "revoke":
                assert name is not None
                return await _revoke(con, name, out)
            return await _list(con, out)
        finally:
            await con.close()

    return asyncio.run(main())


def add_parser(sub: Any) -> None:
    """Add `alerts-token` and its sub-commands to the `citywatch` parser's sub-parsers."""
    tok = sub.add_parser("alerts-token", help="bearer tokens of the alerts API (ack)")
    actions = tok.add_subparsers(dest="token_action", required=True)
    create = actions.add_parser("create", help="make a token for NAME and print it once")
    create.add_argument("name", help="who acts with it: recorded on every acknowledgement")
    revoke = actions.add_parser("revoke", help="revoke NAME's token at once")
    revoke.add_argument("name")
    actions.add_parser("list", help="token names, when made, last used, revoked")
    tok.set_defaults(fn=cmd_alerts_token)
