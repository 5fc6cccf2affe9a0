"""Maintenance of the database's files: VACUUM of the tables that hold message content."""

from __future__ import annotations

import asyncpg

from service.store.session import Connection, Session


async def vacuum_bodies(conn: Connection, *, full: bool) -> None:
    """Remove erased bodies' dead rows (`full`: rewrite the tables, dropping the old files).
    VACUUM cannot run in a transaction, and only the tables' owner may run it."""
    await Session(conn).run("vacuum_full_bodies" if full else "vacuum_bodies")


async def body_tables_size(conn: Connection) -> int:
    """Bytes on disk of the tables vacuum_bodies covers (with their TOAST tables and indexes)."""
    return await Session(conn).value("body_tables_size", int)
