"""The services of one command line run: an operator's work on the database (keys, audits,
rebuilds, vacuum, checks), and reaching the database itself (the embedded server, migrations)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

import asyncpg

from service.app import doctor, maintenance
from service.app import rebuild as rebuild_app
from service.app.services import Audit, Health, Keys, Transfer
from service.store import migrate
from service.store.embedded import EmbeddedPostgres
from service.store.events import Store

T = TypeVar("T")


class Maintenance:
    """An operator's work on the whole database: rebuilding derived tables, vacuuming, checking."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def rebuild(
        self,
        *,
        batch_events: int,
        on_start: Callable[[int], None] = lambda total: None,
        on_progress: Callable[[str, int], None] = lambda step, events: None,
    ) -> rebuild_app.Report:
        return await rebuild_app.rebuild(
            self._store, batch_events=batch_events, on_start=on_start, on_progress=on_progress
        )

    async def vacuum(self, *, full: bool) -> maintenance.Vacuumed:
        return await maintenance.vacuum(self._store, full=full)

    async def unreadable_events(self) -> list[doctor.UnreadableEvent]:
        return await doctor.unreadable_events(self._store)


@dataclass(frozen=True)
class Admin:
    """What a command line run is given: the services an operator's commands use."""

    keys: Keys
    audit: Audit
    health: Health
    maintenance: Maintenance
    transfer: Transfer


@asynccontextmanager
async def open_admin(database_url: str) -> AsyncIterator[Admin]:
    """The services of one command line run, on a small pool of its own."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    assert pool is not None
    try:
        store = Store(pool)
        yield Admin(
            keys=Keys(store),
            audit=Audit(store),
            health=Health(store),
            maintenance=Maintenance(store),
            transfer=Transfer(store),
        )
    finally:
        await pool.close()


async def run_admin(database_url: str, work: Callable[[Admin], Awaitable[T]]) -> T:
    """`work` with the services of a command line run, started and stopped around it."""
    async with open_admin(database_url) as admin:
        return await work(admin)


# The database itself, before any service runs: where it is, and bringing its schema up to date.
Embedded = EmbeddedPostgres  # started and stopped by the command line around its work
url_user = migrate.url_user
as_role = migrate.as_role


def upgrade(owner_url: str, service_role: str | None = None) -> None:
    """Bring the database to the newest schema; given a `service_role`, grant it the service's rights."""
    migrate.upgrade(owner_url, service_role)


def newest_schema() -> str:
    """The schema revision this version of convtree needs."""
    return migrate.head_revision()
