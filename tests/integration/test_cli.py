"""The convtree command: migrate, keys, openapi — run as a user would, in a subprocess."""

import hashlib
import json
import os
import subprocess
import sys
import uuid

from tests.postgres import fetch


def convtree(*args: str, database_url: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    if database_url:
        env["DATABASE_URL"] = database_url
    return subprocess.run([sys.executable, "-m", "service", *args], capture_output=True, text=True, env=env, timeout=120)


def test_migrate_brings_an_empty_database_to_the_newest_schema(databases):
    url = databases.empty()
    result = convtree("migrate", database_url=url)
    assert result.returncode == 0, result.stderr
    assert "migrated to" in result.stdout
    assert fetch(url, "SELECT count(*) FROM alembic_version")[0][0] == 1


def test_keys_are_printed_once_and_stored_hashed(databases):
    url = databases.migrated()
    created = convtree("keys", "create", "--tenant", "acme", "--name", "billing", database_url=url)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("ct_") and len(key) > 40
    rows = fetch(url, "SELECT tenant, name, key_hash FROM api_keys")
    assert [(r["tenant"], r["name"]) for r in rows] == [("acme", "billing")]
    assert rows[0]["key_hash"] == hashlib.sha256(key.encode()).digest()
    assert key not in json.dumps([dict(r) for r in fetch(url, "SELECT tenant, name FROM api_keys")])
    listed = convtree("keys", "list", database_url=url)
    assert "acme\tbilling" in listed.stdout and key not in listed.stdout
    revoked = convtree("keys", "revoke", "--tenant", "acme", "--name", "billing", database_url=url)
    assert revoked.returncode == 0 and "revoked 1" in revoked.stdout
    assert fetch(url, "SELECT revoked_at IS NOT NULL FROM api_keys")[0][0] is True
    assert convtree("keys", "revoke", "--tenant", "acme", "--name", "billing", database_url=url).returncode == 1


def test_openapi_prints_the_document():
    result = convtree("openapi")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["info"]["title"] == "convtree"


def _in_data_files(url: str, text: str) -> bool:
    """Whether `text` is in the data files of `bodies` (as the superuser, after a checkpoint)."""
    fetch(url, "CHECKPOINT")
    [row] = fetch(
        url,
        "SELECT position(convert_to($1, 'UTF8') IN pg_read_binary_file(pg_relation_filepath('bodies'))) > 0",
        text,
    )
    return row[0]


def test_vacuum_full_takes_an_erased_body_out_of_the_data_files(server, api):
    secret = f"erase-me-{uuid.uuid4().hex}"
    cid = api.post("/v1/conversations", json={}).json()["id"]
    mid = api.post(f"/v1/conversations/{cid}/messages", json={"role": "user", "content": secret}).json()["id"]
    r = api.post(f"/v1/conversations/{cid}/messages/{mid}/redact", json={"reason": "asked", "erase": True})
    assert r.status_code == 201, r.text
    assert _in_data_files(server.database_url, secret)  # deleted, yet still in the files
    plain = convtree("vacuum", database_url=server.database_url)
    assert plain.returncode == 0, plain.stderr
    assert "VACUUM of bodies, idempotency_keys" in plain.stdout
    full = convtree("vacuum", "--full", database_url=server.database_url)
    assert full.returncode == 0, full.stderr
    assert "VACUUM FULL" in full.stdout
    assert not _in_data_files(server.database_url, secret)
    assert api.get(f"/v1/conversations/{cid}/audit").json()["valid"] is True
