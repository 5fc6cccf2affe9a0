"""Migrations: alembic, driven from code, executing hand-written SQL through asyncpg."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import asyncpg

from alembic import command, op
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.util import await_only

from service.store.session import Session

ROOT = Path(__file__).resolve().parents[2]
MIGRATION_LOCK = 0x636F6E7674726565  # "convtree": the advisory lock that one migrator holds at a time


def alembic_config(database_url: str | None = None) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "alembic"))
    if database_url is not None:
        config.attributes["database_url"] = sqlalchemy_url(database_url)
    return config


def sqlalchemy_url(database_url: str | None) -> str:
    """The SQLAlchemy spelling of an asyncpg URL; without one, DATABASE_URL or the embedded server."""
    if database_url is None:
        from service.config import Settings
        from service.store.embedded import EmbeddedPostgres

        settings = Settings.from_env()
        database_url = settings.database_url or EmbeddedPostgres(settings.data_dir).start()
    scheme, _, rest = database_url.partition("://")
    if scheme not in ("postgres", "postgresql", "postgresql+asyncpg"):
        raise ValueError(f"not a PostgreSQL URL: {scheme}://…")
    return f"postgresql+asyncpg://{rest}"


def upgrade(database_url: str, service_role: str | None = None) -> None:
    """Bring the database to the newest revision (safe to run from several processes at once),
    then, given a `service_role`, grant that role exactly the rights the service needs on it."""
    command.upgrade(alembic_config(database_url), "head")
    if service_role is not None:
        asyncio.run(grant_service_role(database_url, service_role))


async def grant_service_role(owner_url: str, role: str) -> None:
    """Create the service's role if needed and grant it its rights on this database (schema.sql's
    grant_service_role); run as the role that owns the tables."""
    conn = await asyncpg.connect(owner_url)
    try:
        async with conn.transaction():
            session = Session(conn)
            await session.run("migration_lock", key=MIGRATION_LOCK)
            await session.run("grant_service_role", role=role)
    finally:
        await conn.close()


def url_user(database_url: str) -> str | None:
    """The role a PostgreSQL URL logs in as (None: the client's default)."""
    user = urlsplit(database_url).username
    return None if not user else unquote(user)


def as_role(database_url: str, role: str) -> str:
    """The same server and database, logged in as `role` (with no password: for servers that trust
    local connections, such as the embedded one)."""
    parts = urlsplit(database_url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{quote(role, safe='')}@{host}"))


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def execute_script(sql: str) -> None:
    """Run a multi-statement SQL script on the migration's connection, as asyncpg sends it:
    one simple-protocol round trip, so function bodies and DO blocks need no splitting."""
    driver_connection = op.get_bind().connection.driver_connection
    assert driver_connection is not None, "a migration runs on an open connection"
    await_only(driver_connection.execute(sql))
