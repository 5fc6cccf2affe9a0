"""A real PostgreSQL for the integration and migration lanes: the embedded one, or TEST_DATABASE_URL /
DATABASE_URL, with one migrated template database per run and a fresh copy of it per use."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from service.store.embedded import EmbeddedPostgres
from service.store.migrate import upgrade

T = TypeVar("T")


def run(coro: Any) -> Any:
    """Run a coroutine to completion from a synchronous test."""
    return asyncio.run(coro)


# The role every test server serves as, like `convtree serve`: it owns nothing. Roles are
# cluster-wide, so each test run has its own (the tests of several runs may share one server).
SERVICE_ROLE = f"convtree_test_{os.getpid()}_service"


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def fetch(url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    async def go() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(url)
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()

    return run(go())


class Databases:
    """Creates databases on the test server, each a copy of one migrated template."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.prefix = f"convtree_test_{os.getpid()}"
        self.template = f"{self.prefix}_template"
        self._count = 0
        self._created: list[str] = []

    async def _admin(self, *statements: str) -> None:
        conn = await asyncpg.connect(self.admin_url)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    def create_template(self) -> None:
        run(self._admin(f'DROP DATABASE IF EXISTS "{self.template}"', f'CREATE DATABASE "{self.template}"'))
        self._created.append(self.template)
        upgrade(with_database(self.admin_url, self.template), SERVICE_ROLE)

    def empty(self) -> str:
        """A new, empty (unmigrated) database."""
        return self._new(None)

    def migrated(self) -> str:
        """A new database with the full schema, copied from the template."""
        return self._new(self.template)

    def _new(self, template: str | None) -> str:
        self._count += 1
        name = f"{self.prefix}_{self._count}"
        clause = f' TEMPLATE "{template}"' if template else ""
        run(self._admin(f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"{clause}'))
        self._created.append(name)
        return with_database(self.admin_url, name)

    def drop_all(self) -> None:
        statements = [f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)' for n in reversed(self._created)]
        run(self._admin(*statements, f'DROP ROLE IF EXISTS "{SERVICE_ROLE}"'))


@contextmanager
def cluster() -> Iterator[Databases]:
    """The test PostgreSQL, with its template made; every database made on it is dropped at the end."""
    url = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    embedded = None
    data_dir = None
    if not url:
        data_dir = Path(tempfile.mkdtemp(prefix="convtree-test-pg-"))
        embedded = EmbeddedPostgres(data_dir)
        url = embedded.start()
    dbs = Databases(url)
    dbs.create_template()
    try:
        yield dbs
    finally:
        dbs.drop_all()
        if embedded is not None:
            embedded.stop()
            shutil.rmtree(data_dir, ignore_errors=True)


_ONCE: dict[str, pytest.StashKey[Any]] = {}


def once_per_run(config: pytest.Config, name: str, start: Callable[[], AbstractContextManager[T]]) -> T:
    """What `start()` gives, entered the first time any lane asks and left when the run ends. Each
    lane's conftest registers the shared fixtures, and pytest would otherwise make one per lane
    (two template databases of the same name, when the integration and migration lanes run together)."""
    key = _ONCE.setdefault(name, pytest.StashKey[Any]())
    if key not in config.stash:
        stack = ExitStack()
        config.stash[key] = stack.enter_context(start())
        config.add_cleanup(stack.close)
    return config.stash[key]


@pytest.fixture(scope="session")
def databases(pytestconfig: pytest.Config) -> Databases:
    return once_per_run(pytestconfig, "databases", cluster)
