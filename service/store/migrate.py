"""Migrations: alembic, driven from code, executing hand-written SQL through asyncpg."""

from __future__ import annotations

from pathlib import Path

from alembic import command, op
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.util import await_only

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


def upgrade(database_url: str) -> None:
    """Bring the database to the newest revision (safe to run from several processes at once)."""
    command.upgrade(alembic_config(database_url), "head")


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def execute_script(sql: str) -> None:
    """Run a multi-statement SQL script on the migration's connection, as asyncpg sends it:
    one simple-protocol round trip, so function bodies and DO blocks need no splitting."""
    driver_connection = op.get_bind().connection.driver_connection
    await_only(driver_connection.execute(sql))
