"""schema/schema.sql is the truth: a database built from it and one built by the migrations match."""

from pathlib import Path

import asyncpg

from service.store.migrate import upgrade
from tests.postgres import run

SCHEMA = Path(__file__).resolve().parents[2] / "schema" / "schema.sql"

CATALOG = {
    "columns": """
        SELECT table_name, column_name, data_type, is_nullable, column_default, ordinal_position
          FROM information_schema.columns
         WHERE table_schema = 'public' AND table_name <> 'alembic_version'
         ORDER BY table_name, ordinal_position""",
    "constraints": """
        SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid)
          FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
         WHERE n.nspname = 'public' AND c.conrelid <> 0 AND c.conrelid::regclass::text <> 'alembic_version'
         ORDER BY 1, 2""",
    "indexes": """
        SELECT tablename, indexname, indexdef FROM pg_indexes
         WHERE schemaname = 'public' AND tablename <> 'alembic_version' ORDER BY 1, 2""",
    "triggers": """
        SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid)
          FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1, 2""",
    "functions": """
        SELECT p.proname, pg_get_function_identity_arguments(p.oid), pg_get_functiondef(p.oid)
          FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'public' ORDER BY 1, 2""",
    "sequences": """
        SELECT sequence_name, data_type, start_value, increment
          FROM information_schema.sequences WHERE sequence_schema = 'public' ORDER BY 1""",
}


async def _snapshot(url: str) -> dict[str, list[tuple]]:
    conn = await asyncpg.connect(url)
    try:
        return {name: [tuple(r) for r in await conn.fetch(query)] for name, query in CATALOG.items()}
    finally:
        await conn.close()


async def _apply(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def test_migrations_produce_exactly_the_schema_file(databases):
    from_file = databases.empty()
    run(_apply(from_file, SCHEMA.read_text()))
    migrated = databases.empty()
    upgrade(migrated)
    expected, actual = run(_snapshot(from_file)), run(_snapshot(migrated))
    for part in CATALOG:
        assert actual[part] == expected[part], f"{part} differ between schema/schema.sql and the migrations"
    assert expected["columns"] and expected["functions"] and expected["triggers"]


def test_migrating_twice_changes_nothing(databases):
    url = databases.migrated()
    before = run(_snapshot(url))
    upgrade(url)
    assert run(_snapshot(url)) == before
