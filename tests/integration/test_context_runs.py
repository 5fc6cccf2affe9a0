"""The context read by runs (message_path) agrees with the tree, and every message gets its run."""

import asyncio
import uuid

import asyncpg
import pytest
from alembic import command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.store.migrate import alembic_config, upgrade
from tests.helpers import create, say
from tests.integration.test_rebuild import Workload
from tests.postgres import fetch, run


# Branches and forks often: forks of forks, and messages written under inherited ones, are where
# counting siblings has the most cases. Which conversation and message each operation picks comes
# from a seeded random source, uniformly: small integers would keep picking the first ones.
KINDS = st.lists(st.sampled_from(["create", "append", "branch", "branch", "fork", "fork", "move"]), min_size=4, max_size=30)


def expected_context(tree):
    """The path to each message and its (sibling count, position), worked out from the tree alone:
    the messages a conversation shows, in the order written, which puts an inherited child first."""
    messages = {m["id"]: m for m in tree["messages"]}
    children = {}
    for m in tree["messages"]:
        children.setdefault(m["parent_message_id"], []).append(m["id"])
    expected = {}
    for mid in messages:
        path = []
        node = mid
        while node is not None:
            path.append(node)
            node = messages[node]["parent_message_id"]
        path.reverse()
        expected[mid] = [
            (m, len(children[messages[m]["parent_message_id"]]), children[messages[m]["parent_message_id"]].index(m) + 1)
            for m in path
        ]
    return expected


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(kinds=KINDS, rnd=st.randoms(use_true_random=False))
def test_every_context_agrees_with_the_tree(api, kinds, rnd):
    work = Workload(api)
    for kind in kinds:
        work.apply(kind, rnd.randrange(10**6), rnd.randrange(10**6))
    for cid in work.conversations:
        tree = api.get(f"/v1/conversations/{cid}/tree").json()
        for mid, path in expected_context(tree).items():
            r = api.get(f"/v1/conversations/{cid}/messages/{mid}/context")
            assert r.status_code == 200, r.text
            got = [(m["id"], m["sibling_count"], m["sibling_position"]) for m in r.json()["messages"]]
            assert got == path, (cid, mid)


def test_runs_follow_first_children_and_branch_at_later_ones(api, server):
    conv = create(api, system="s")
    a = say(api, conv["id"], "a")
    b = say(api, conv["id"], "b")
    b2 = say(api, conv["id"], "b again", parent_message_id=a["id"])
    c2 = say(api, conv["id"], "c under b again")
    runs = {
        str(r["message_id"]): (r["run_id"], r["parent_run_id"])
        for r in fetch(
            server.database_url,
            "SELECT message_id, run_id, parent_run_id FROM events WHERE conversation_id = $1 AND run_id IS NOT NULL",
            uuid.UUID(conv["id"]),
        )
    }
    root = runs[conv["head_id"]][0]
    assert str(root) == conv["head_id"] and runs[conv["head_id"]][1] is None
    assert runs[a["id"]] == (root, root) and runs[b["id"]] == (root, root)
    assert str(runs[b2["id"]][0]) == b2["id"] and runs[b2["id"]][1] == root  # a later child starts a run
    assert runs[c2["id"]] == (runs[b2["id"]][0], runs[b2["id"]][0])


async def _copy_log(source: str, target: str, family: uuid.UUID) -> None:
    """A family's log and bodies in `source`, inserted into `target` as a writer of revision 0001 wrote
    them (only the family: other tests share the source database, some with deliberately broken logs)."""
    src, dst = await asyncio.gather(asyncpg.connect(source), asyncpg.connect(target))
    try:
        events = await src.fetch(
            "SELECT seq, tenant, conversation_id, family_id, type, message_id, parent_id, role, depth,"
            " body_sha256, payload, actor, request_id, created_at, hash FROM events WHERE family_id = $1 ORDER BY seq",
            family,
        )
        bodies = await src.fetch("SELECT family_id, message_id, content FROM bodies WHERE family_id = $1", family)
        async with dst.transaction():
            await dst.executemany(
                "INSERT INTO events (seq, tenant, conversation_id, family_id, type, message_id, parent_id, role,"
                " depth, body_sha256, payload, actor, request_id, created_at, hash)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
                [tuple(e) for e in events],
            )
            await dst.executemany("INSERT INTO bodies VALUES ($1, $2, $3)", [tuple(b) for b in bodies])
    finally:
        await asyncio.gather(src.close(), dst.close())


def test_the_migration_gives_existing_messages_the_runs_the_trigger_gives(api, server, databases):
    # A tree with branches, a fork, a fork of the fork and a message under an inherited one.
    conv = create(api, system="s")
    a = say(api, conv["id"], "a")
    say(api, conv["id"], "b")
    say(api, conv["id"], "b again", parent_message_id=a["id"])
    say(api, conv["id"], "c")
    fork = api.post(f"/v1/conversations/{conv['id']}/messages/{a['id']}/fork", json={}).json()
    f1 = say(api, fork["id"], "f1")
    say(api, fork["id"], "under the root", parent_message_id=conv["head_id"])
    fork2 = api.post(f"/v1/conversations/{fork['id']}/messages/{f1['id']}/fork", json={}).json()
    say(api, fork2["id"], "g1")
    say(api, fork2["id"], "g2", parent_message_id=a["id"])

    root = uuid.UUID(conv["head_id"])
    [family] = fetch(server.database_url, "SELECT family_id FROM events WHERE message_id = $1", root)
    old = databases.empty()
    command.upgrade(alembic_config(old), "0001")
    run(_copy_log(server.database_url, old, family["family_id"]))
    upgrade(old)

    query = (
        "SELECT message_id, run_id, parent_run_id FROM events"
        " WHERE family_id = $1 AND type = 'message_appended' ORDER BY seq"
    )
    live = [tuple(r) for r in fetch(server.database_url, query, family["family_id"])]
    migrated = [tuple(r) for r in fetch(old, query, family["family_id"])]
    assert len(live) == 9
    assert migrated == live
    assert len({r[1] for r in live}) == 6  # root run, "b again", the fork's two, the fork of the fork's two
