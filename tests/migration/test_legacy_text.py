"""A log that holds U+0000 in event payloads, as servers before revision 0005 stored it, migrates,
is reported by `convtree doctor`, and keeps working in every read and write."""

from __future__ import annotations

import importlib.util
import uuid
from pathlib import Path

import asyncpg
import pytest
from alembic import command
from click.testing import CliRunner

from service.app import conversations as conversations_app
from service.app import forks as forks_app
from service.app import messages as messages_app
from service.app.caller import Caller
from service.cli import main
from service.store.events import Store
from service.store.migrate import alembic_config, upgrade
from tests.helpers import problem
from tests.postgres import fetch, run
from tests.servers import Server



def _revision(name: str) -> object:
    path = Path(__file__).resolve().parents[2] / "alembic" / "versions" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _functions_of_today() -> str:
    """The functions today's statements call that revision 0004 did not have (revision 0007's:
    served_body; its write_events, which revision 0010 drops, no statement calls any more), and the
    table they write beside the log (message_paths as revision 0017 left it, with its key function,
    both dropped again before the database is migrated: an older server kept no path digests)."""
    functions: str = _revision("0007_write_events_once").FUNCTIONS  # type: ignore[attr-defined]
    table: str = _revision("0017_narrow_message_storage").TABLE  # type: ignore[attr-defined]
    return functions + table


async def _store_as_an_older_server_did(url: str, caller: Caller) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    """Through the app's own use cases, below the API that refuses such text today."""
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    assert pool is not None
    store = Store(pool)
    try:
        async with pool.acquire() as conn:
            await conn.execute(_functions_of_today())
        async with store.transaction() as tx:
            new = conversations_app.NewConversation(title="legacy", metadata={"k\x00": "v\x00", "ok": "fine"})
            cid = (await conversations_app.create(tx, caller, new)).conversation.id
        async with store.transaction() as tx:
            message = messages_app.NewMessage(role="user", content="hello", metadata={"m": "a\x00b"})
            mid = (await messages_app.append(tx, caller, cid, message)).message.id
        async with store.transaction() as tx:
            fork = forks_app.NewFork(title="fork", metadata={"f": "\x00"})
            fid = (await forks_app.fork(tx, caller, cid, mid, fork)).conversation.id
        # What went wrong before revision 0005: that fork can take no message under what it inherited.
        with pytest.raises(asyncpg.UntranslatableCharacterError):
            async with store.transaction() as tx:
                await messages_app.append(tx, caller, fid, messages_app.NewMessage(role="user", content="stuck"))
        async with pool.acquire() as conn:
            await conn.execute("DROP TABLE message_paths; DROP FUNCTION path_key(text, bytea)")
        return cid, mid, fid
    finally:
        await pool.close()


def test_a_log_holding_u0000_from_before_0005_is_reported_and_keeps_working(databases):
    url = databases.empty()
    command.upgrade(alembic_config(url), "0004")
    tenant = f"tenant-{uuid.uuid4().hex[:12]}"
    cid, mid, fid = run(_store_as_an_older_server_did(url, Caller(tenant, "legacy")))
    legacy_seqs = [r["seq"] for r in fetch(url, "SELECT seq FROM events WHERE strpos(payload::text, '\\u0000') > 0 ORDER BY seq")]
    assert len(legacy_seqs) == 3

    upgrade(url)

    doctor = CliRunner().invoke(main, ["doctor"], env={"DATABASE_URL": url})
    assert doctor.exit_code == 1, doctor.output
    reported = [line.split("\t") for line in doctor.stdout.splitlines()]
    assert [int(r[0]) for r in reported] == legacy_seqs
    assert {r[2] for r in reported} == {str(cid), str(fid)} and {r[1] for r in reported} == {tenant}

    server = Server(url)
    server.start()
    try:
        _, key = server.new_key(tenant)
        with server.client(key) as api:
            # The message keeps its metadata as its event holds it; summaries read the escape as text.
            assert api.get(f"/v1/conversations/{cid}/messages/{mid}").json()["metadata"] == {"m": "a\x00b"}
            summary = api.get(f"/v1/conversations/{cid}").json()
            assert summary["metadata"] == {"k\\u0000": "v\\u0000", "ok": "fine"}
            assert api.get(f"/v1/conversations/{fid}").json()["metadata"] == {"f": "\\u0000"}
            # Writes: the fork under what it inherited, a turn, a fork of the fork, a redaction.
            appended = api.post(f"/v1/conversations/{fid}/messages", json={"role": "user", "content": "unstuck"})
            assert appended.status_code == 201, appended.text
            turn = api.post(f"/v1/conversations/{fid}/turns", json={"content": "again", "provider": "echo"})
            assert turn.status_code == 201, turn.text
            again = api.post(f"/v1/conversations/{fid}/messages/{mid}/fork", json={})
            assert again.status_code == 201, again.text
            assert api.post(f"/v1/conversations/{cid}/messages", json={"role": "user", "content": "more"}).status_code == 201
            redacted = api.post(f"/v1/conversations/{cid}/messages/{mid}/redact", json={"reason": "legacy"})
            assert redacted.status_code == 201, redacted.text
            # Replay, audit and export of every conversation.
            for conversation in (cid, fid, again.json()["id"]):
                for read in ("", "/tree", "/leaves", "/context"):
                    for as_of in legacy_seqs + [None]:
                        r = api.get(f"/v1/conversations/{conversation}{read}", params={"as_of": as_of} if as_of else {})
                        assert r.status_code in (200, 404), (read, as_of, r.text)
                assert api.get(f"/v1/conversations/{conversation}/audit").json()["valid"] is True
                assert api.get(f"/v1/conversations/{conversation}/export").status_code == 200
            assert api.get(f"/v1/conversations/{fid}", params={"as_of": legacy_seqs[-1]}).json()["title"] == "fork"
            # Importing such an export elsewhere is refused like any request carrying that text.
            export = api.get(f"/v1/conversations/{cid}/export").content
            _, other = server.new_key()
        with server.client(other) as elsewhere:
            body = problem(elsewhere.post("/v1/conversations/import", content=export), 422, "invalid-export")
            assert body["context"] == {"line": 1, "seq": legacy_seqs[0], "reason": "unstorable-text"}
    finally:
        server.stop()

    before = fetch(url, "SELECT row_to_json(c)::text AS row FROM conversations c ORDER BY conversation_id")
    rebuilt = CliRunner().invoke(main, ["rebuild"], env={"DATABASE_URL": url})
    assert rebuilt.exit_code == 0, rebuilt.output
    assert fetch(url, "SELECT row_to_json(c)::text AS row FROM conversations c ORDER BY conversation_id") == before
