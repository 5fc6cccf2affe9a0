"""Least privilege: the service runs as a role that owns nothing, so whoever holds its connection
(a bug, an injected statement, a leaked password) can append to the log but never rewrite it or
switch its guards off. The migrating role owns the tables."""

import os
import subprocess
import sys
import uuid

import asyncpg
import pytest

from service.store.migrate import as_role
from tests.helpers import create, say
from tests.postgres import SERVICE_ROLE, fetch, run


# Each is refused by PostgreSQL's privileges (not by a trigger): the role may not even try.
SWITCHING_THE_GUARDS_OFF = [
    "ALTER TABLE events DISABLE TRIGGER events_immutable",
    "ALTER TABLE events DISABLE TRIGGER ALL",
    "ALTER TABLE bodies DISABLE TRIGGER bodies_erasable",
    "DROP TRIGGER events_immutable ON events",
    "DROP TRIGGER bodies_immutable ON bodies",
    "DROP FUNCTION reject_change() CASCADE",
    "CREATE OR REPLACE FUNCTION reject_change() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$",
    "SET session_replication_role = replica",
    "SET ROLE postgres",
    "UPDATE events SET actor = 'mallory'",
    "DELETE FROM events",
    "TRUNCATE events",
    "TRUNCATE bodies",
    "UPDATE bodies SET content = 'forged'",
    "ALTER TABLE events DROP CONSTRAINT events_message_columns",
    "DROP TABLE events",
    "CREATE TABLE shadow (x int)",
    "SELECT grant_service_role('anyone')",
]


async def _execute(url: str, statement: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@pytest.mark.parametrize("statement", SWITCHING_THE_GUARDS_OFF)
def test_the_service_role_cannot_switch_the_guards_off(server, api, statement):
    conv = create(api, system="sys")
    say(api, conv["id"], "kept as written")
    before = fetch(server.database_url, "SELECT seq, actor, hash FROM events ORDER BY seq")
    with pytest.raises(asyncpg.InsufficientPrivilegeError) as refused:
        run(_execute(server.service_url, statement))
    # The privilege system's own words (an immutability trigger raises the same SQLSTATE).
    assert "permission denied" in str(refused.value) or "must be owner" in str(refused.value)
    assert fetch(server.database_url, "SELECT seq, actor, hash FROM events ORDER BY seq") == before
    assert api.get(f"/v1/conversations/{conv['id']}/audit").json()["valid"] is True


def test_the_test_server_serves_as_the_service_role(server, api):
    say(api, create(api)["id"], "written by the service role")
    [database] = fetch(server.database_url, "SELECT current_database()")
    sessions = fetch(
        server.database_url,
        "SELECT DISTINCT usename FROM pg_stat_activity"
        " WHERE datname = $1 AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
        database[0],
    )
    assert [s["usename"] for s in sessions] == [SERVICE_ROLE]
    owners = fetch(
        server.database_url,
        "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class WHERE relname IN ('events', 'bodies', 'conversations')",
    )
    assert SERVICE_ROLE not in [o[0] for o in owners]


def test_granting_twice_and_a_role_that_already_exists_are_fine(databases):
    url = databases.migrated()
    for _ in range(2):
        run(_execute(url, f"SELECT grant_service_role('{SERVICE_ROLE}')"))
    assert fetch(url, "SELECT has_table_privilege($1, 'events', 'UPDATE')", SERVICE_ROLE)[0][0] is False
    assert fetch(url, "SELECT has_table_privilege($1, 'events', 'INSERT')", SERVICE_ROLE)[0][0] is True


def test_an_owner_cannot_be_made_the_service_role(databases):
    url = databases.migrated()
    [owner] = fetch(url, "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'events'")
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="cannot be the service role"):
        run(_execute(url, f"SELECT grant_service_role('{owner[0]}')"))


def _migrate(owner_url: str, service_url: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CONVTREE_MIGRATE_DATABASE_URL")}
    env |= {"CONVTREE_MIGRATE_DATABASE_URL": owner_url, "DATABASE_URL": service_url}
    return subprocess.run([sys.executable, "-m", "service", "migrate"], capture_output=True, text=True, env=env, timeout=120)


def test_migrate_refuses_to_make_the_owner_the_service_role(databases):
    owner = databases.empty()
    result = _migrate(owner, owner)
    assert result.returncode != 0
    assert "cannot be the service role" in result.stderr and "Traceback" not in result.stderr


def test_migrate_with_an_owner_url_grants_the_role_of_database_url(databases):
    owner = databases.empty()
    result = _migrate(owner, as_role(owner, SERVICE_ROLE))
    assert result.returncode == 0, result.stderr
    rights = fetch(
        owner,
        "SELECT p, has_table_privilege($1, 'events', p) FROM unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) p",
        SERVICE_ROLE,
    )
    assert {r[0]: r[1] for r in rights} == {
        "SELECT": True, "INSERT": True, "UPDATE": False, "DELETE": False, "TRUNCATE": False
    }  # fmt: skip
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        run(_execute(as_role(owner, SERVICE_ROLE), "ALTER TABLE events DISABLE TRIGGER ALL"))
    run(_execute(as_role(owner, SERVICE_ROLE), f"SELECT 1 FROM conversations WHERE conversation_id = '{uuid.uuid4()}'"))
