"""Rebuild: every derived table refilled from the log equals the one kept live, row for row."""

import threading
import time
import uuid

import asyncpg
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.cli import main
from service.store.rebuild import rebuild
from tests.postgres import fetch, run
from tests.servers import Server

READS = ("", "/tree", "/leaves", "/context")


@pytest.fixture(scope="module")
def own_server(databases):
    """A server on a database of its own: a rebuild covers the whole database, and these tests
    compare all of it."""
    with Server(databases.migrated()) as srv:
        yield srv


def table(url):
    """Every row of `conversations`, every column, as text (json columns keep their exact text)."""
    return [
        r["row"]
        for r in fetch(url, "SELECT row_to_json(c)::text AS row FROM conversations c ORDER BY tenant, conversation_id")
    ]


def rebuild_now(url, **kwargs):
    async def go():
        conn = await asyncpg.connect(url)
        try:
            return await rebuild(conn, **kwargs)
        finally:
            await conn.close()

    return run(go())


def read_all(client, cids, as_of=None):
    out = {}
    for cid in cids:
        for read in READS:
            r = client.get(f"/v1/conversations/{cid}{read}", params={} if as_of is None else {"as_of": str(as_of[cid])})
            assert r.status_code == 200, r.text
            out[cid, read] = r.json()
    return out


class Workload:
    """Drives the API and keeps a model of which messages each conversation should show."""

    def __init__(self, client):
        self.client = client
        self.conversations: list[str] = []
        self.visible: dict[str, list[str]] = {}
        self.parent: dict[str, str | None] = {}

    def apply(self, kind, i, j):
        if kind == "create" or not self.conversations:
            return self.create(system=i % 2 == 0)
        cid = self.conversations[i % len(self.conversations)]
        seen = self.visible[cid]
        if not seen or kind == "append":
            return self.append(cid, None)
        target = seen[j % len(seen)]
        if kind == "branch":
            return self.append(cid, target)
        if kind == "move":
            r = self.client.put(f"/v1/conversations/{cid}/head", json={"message_id": target})
            assert r.status_code == 200, r.text
            return None
        assert kind == "fork"
        r = self.client.post(f"/v1/conversations/{cid}/messages/{target}/fork", json={"title": f"fork {j}"})
        assert r.status_code == 201, r.text
        fork = r.json()["id"]
        self.conversations.append(fork)
        self.visible[fork] = self.path(target)
        return None

    def create(self, system):
        body = {"title": "c", "metadata": {"n": len(self.conversations), "z": [1, {"b": None}]}}
        if system:
            body["system"] = "be kind"
        r = self.client.post("/v1/conversations", json=body)
        assert r.status_code == 201, r.text
        conv = r.json()
        self.conversations.append(conv["id"])
        self.visible[conv["id"]] = [conv["head_id"]] if system else []
        if system:
            self.parent[conv["head_id"]] = None

    def append(self, cid, parent):
        body = {"role": "user", "content": f"m{len(self.parent)}", "metadata": {"i": len(self.parent)}}
        if parent is not None:
            body["parent_message_id"] = parent
        r = self.client.post(f"/v1/conversations/{cid}/messages", json=body)
        assert r.status_code == 201, r.text
        message = r.json()
        self.parent[message["id"]] = message["parent_message_id"]
        self.visible[cid].append(message["id"])

    def path(self, mid):
        path = []
        while mid is not None:
            path.append(mid)
            mid = self.parent[mid]
        return path[::-1]


OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(["create", "append", "branch", "move", "fork"]),
        st.integers(min_value=0, max_value=10**6),
        st.integers(min_value=0, max_value=10**6),
    ),
    min_size=1,
    max_size=25,
)


@pytest.mark.slow
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations=OPERATIONS)
def test_rebuilt_state_equals_the_live_state(own_server, operations):
    _, key = own_server.new_key()
    with own_server.client(key) as client:
        work = Workload(client)
        for operation in operations:
            work.apply(*operation)
        live = read_all(client, work.conversations)
        for cid in work.conversations:
            shown = [m["id"] for m in live[cid, "/tree"]["messages"]]
            assert sorted(shown) == sorted(work.visible[cid]), "the tree shows what the model says it should"
        rows = table(own_server.database_url)

        rebuild_now(own_server.database_url, batch_events=7)  # small batches: many statements

        assert table(own_server.database_url) == rows
        assert read_all(client, work.conversations) == live
        # Replay folds the same log: as of each conversation's newest event, it is the live state.
        as_of = {cid: live[cid, ""]["last_seq"] for cid in work.conversations}
        assert read_all(client, work.conversations, as_of) == live


def test_the_rebuild_command_repairs_the_derived_table_and_reports_its_rate(own_server):
    _, key = own_server.new_key()
    with own_server.client(key) as client:
        work = Workload(client)
        for operation in [("create", 0, 0), ("append", 0, 0), ("fork", 0, 1), ("branch", 1, 0), ("move", 0, 0)]:
            work.apply(*operation)
    url = own_server.database_url
    rows = table(url)
    fetch(url, "UPDATE conversations SET message_count = 0, leaf_count = 0, head_id = NULL, last_hash = '\\x00'")
    fetch(url, "DELETE FROM conversations WHERE conversation_id = $1", uuid.UUID(work.conversations[1]))
    assert table(url) != rows

    result = CliRunner().invoke(main, ["rebuild", "--batch-events", "3"], env={"DATABASE_URL": url})

    assert result.exit_code == 0, result.output
    assert "events/s" in result.stdout and f"conversations: {len(rows)} rows" in result.stdout
    assert table(url) == rows


def test_a_rebuild_keeps_api_keys_and_idempotency_keys(own_server):
    _, key = own_server.new_key()
    with own_server.client(key) as client:
        first = client.post("/v1/conversations", json={"title": "once"}, headers={"Idempotency-Key": "k"})
        assert first.status_code == 201
        kept = fetch(
            own_server.database_url, "SELECT tenant, key, status, response FROM idempotency_keys ORDER BY 1, 2"
        )

        rebuild_now(own_server.database_url)

        assert (
            fetch(own_server.database_url, "SELECT tenant, key, status, response FROM idempotency_keys ORDER BY 1, 2")
            == kept
        )
        again = client.post("/v1/conversations", json={"title": "once"}, headers={"Idempotency-Key": "k"})
        assert again.status_code == 201 and again.json() == first.json()
        assert again.headers["idempotent-replayed"] == "true"


def test_a_writer_waits_for_a_rebuild_and_loses_nothing(own_server):
    _, key = own_server.new_key()
    url = own_server.database_url
    with own_server.client(key) as client:
        conv = client.post("/v1/conversations", json={}).json()
        responses = []

        def append():
            r = client.post(f"/v1/conversations/{conv['id']}/messages", json={"role": "user", "content": "during"})
            responses.append(r)

        writer = threading.Thread(target=append)

        def on_start(total):
            # The rebuild holds its locks now: start a write and wait until it is queued behind them.
            writer.start()
            waiting = []

            def poll():
                deadline = time.monotonic() + 10
                while not waiting and time.monotonic() < deadline:
                    waiting.extend(
                        fetch(
                            url,
                            "SELECT 1 FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
                            " WHERE c.relname = 'conversations' AND NOT l.granted",
                        )
                    )
                    time.sleep(0.01)

            poller = threading.Thread(target=poll)
            poller.start()
            poller.join()
            assert waiting, "the append did not wait for the rebuild"

        rebuild_now(url, on_start=on_start)
        writer.join(timeout=30)

        [r] = responses
        assert r.status_code == 201, r.text
        summary = client.get(f"/v1/conversations/{conv['id']}").json()
        assert (summary["head_id"], summary["message_count"], summary["last_seq"]) == (
            r.json()["id"],
            1,
            r.json()["seq"],
        )
    rows = table(url)
    rebuild_now(url)
    assert table(url) == rows


def test_a_conversation_that_cannot_be_folded_keeps_its_row_and_the_others_are_rebuilt(own_server):
    _, key = own_server.new_key()
    with own_server.client(key) as client:
        cids = [client.post("/v1/conversations", json={"title": f"c{i}"}).json()["id"] for i in range(5)]
        for cid in cids:
            client.post(f"/v1/conversations/{cid}/messages", json={"role": "user", "content": "hi"})
    url = own_server.database_url
    rows = table(url)
    fetch(url, "UPDATE conversations SET message_count = 0")
    broken = cids[2]
    # A fold the database refuses, for one conversation only (as a bug or a damaged row would).
    fetch(url, f"""
        CREATE FUNCTION test_refuse_fold() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.conversation_id = '{broken}' THEN RAISE EXCEPTION 'cannot fold %', NEW.conversation_id; END IF;
            RETURN NEW;
        END $$""")
    fetch(url, "CREATE TRIGGER test_refuse_fold BEFORE INSERT ON conversations FOR EACH ROW EXECUTE FUNCTION test_refuse_fold()")
    try:
        result = CliRunner().invoke(main, ["rebuild", "--batch-events", "4"], env={"DATABASE_URL": url})
    finally:
        fetch(url, "DROP TRIGGER test_refuse_fold ON conversations")
        fetch(url, "DROP FUNCTION test_refuse_fold()")

    assert result.exit_code == 1, result.output
    assert f"not rebuilt: conversations {broken}" in result.stderr and "cannot fold" in result.stderr
    counts = {
        str(r["conversation_id"]): r["message_count"]
        for r in fetch(url, "SELECT conversation_id, message_count FROM conversations WHERE conversation_id = ANY($1)",
                       [uuid.UUID(c) for c in cids])
    }
    assert counts == {cid: (0 if cid == broken else 1) for cid in cids}  # the old row, kept
    # Once the fault is gone, a rebuild restores everything.
    assert rebuild_now(url).failures == []
    assert table(url) == rows


def test_metadata_set_through_the_conversations_api_is_folded_by_rebuild_and_replay(own_server):
    """`conversation_updated` sets the summary's metadata: a rebuild refolds it from the log, and
    replay shows the metadata each point of the log had."""
    _, key = own_server.new_key()
    with own_server.client(key) as client:
        created = client.post("/openai/v1/conversations", json={"metadata": {"v": "1"}}).json()
        cid = created["id"].removeprefix("conv_")
        cid = f"{cid[:8]}-{cid[8:12]}-{cid[12:16]}-{cid[16:20]}-{cid[20:]}"
        first_seq = client.get(f"/v1/conversations/{cid}").json()["last_seq"]
        client.post(f"/openai/v1/conversations/{created['id']}", json={"metadata": {"v": "2"}})
        client.post(f"/openai/v1/conversations/{created['id']}", json={"metadata": {"v": "3"}})
        rows = table(own_server.database_url)

        rebuild_now(own_server.database_url)

        assert table(own_server.database_url) == rows
        assert client.get(f"/v1/conversations/{cid}").json()["metadata"] == {"v": "3"}
        past = client.get(f"/v1/conversations/{cid}", params={"as_of": str(first_seq)}).json()
        assert past["metadata"] == {"v": "1"}
        assert client.get(f"/openai/v1/conversations/{created['id']}").json()["metadata"] == {"v": "3"}
