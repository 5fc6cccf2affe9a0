"""The database schema's state: which migration it is at, and whether it is the newest."""

from __future__ import annotations

import msgspec

from service.store import migrate
from service.store.events import Store


class MigrationNeeded(Exception):
    """The database's schema is older than this version of convtree: run `convtree migrate`."""

    def __init__(self, status: SchemaStatus) -> None:
        super().__init__(
            f"the database is at schema revision {status.current or 'none'}, this convtree needs "
            f"{status.newest}: run `convtree migrate`"
        )
        self.status = status


class SchemaStatus(msgspec.Struct, frozen=True, kw_only=True):
    current: str | None  # None: never migrated
    newest: str

    @property
    def migration_needed(self) -> bool:
        return self.current != self.newest


async def schema_status(store: Store) -> SchemaStatus:
    async with store.reader() as tx:
        current = await tx.schema_revision()
    return SchemaStatus(current=current, newest=migrate.head_revision())


async def require_newest_schema(store: Store) -> None:
    status = await schema_status(store)
    if status.migration_needed:
        raise MigrationNeeded(status)
