"""Tree listings stay index-driven on a database whose tables were never analyzed: a fresh
database after a burst of appends, before autovacuum's first analyze. PostgreSQL then estimates one
row for any of a conversation's events, and a listing that joins events to events may be planned
as one scan of the family per message: quadratic in the tree's size. These tests look at the plans
(never at the time) of a branched tree of several thousand messages, and ask the API for the answer."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from bench.build import Builder, Plan
from bench.plans import freshness, never_analyze
from service.store.events import Store
from service.store.queries import Q
from tests.postgres import run
from tests.servers import Server

TRUNK = 1000
BRANCHES = 200  # one off every fifth message of the trunk
BRANCH_LENGTH = 20
MESSAGES = TRUNK + BRANCHES * BRANCH_LENGTH


@dataclass
class Tree:
    server: Server
    key: str
    conversation_id: uuid.UUID
    family_id: uuid.UUID
    last_seq: int
    tips: set[uuid.UUID]  # the branch tips the builder made
    trunk: list[uuid.UUID]  # the trunk's messages, root first


async def _build(url: str, tenant: str) -> tuple[uuid.UUID, uuid.UUID, int, set[uuid.UUID], list[uuid.UUID]]:
    conn = await asyncpg.connect(url)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=1)
    assert pool is not None
    try:
        await never_analyze(conn)
        builder = Builder(Store(pool), tenant, random.Random(9), chars=40, batch=200)
        built = await builder.create("branched")
        trunk = Plan(built, None, TRUNK)
        await builder.grow([trunk])
        branches = [Plan(built, trunk.made[i * 5], BRANCH_LENGTH) for i in range(BRANCHES)]
        await builder.grow(branches)
        row = await conn.fetchrow(
            "SELECT family_id, last_seq FROM conversations WHERE conversation_id = $1", built.conversation_id
        )
        tips = {p.tip for p in [trunk, *branches] if p.tip is not None}
        return built.conversation_id, row["family_id"], row["last_seq"], tips, list(trunk.made)
    finally:
        await pool.close()
        await conn.close()


@pytest.fixture(scope="module")
def tree(databases: Any) -> Iterator[Tree]:
    """A server on a database of its own, holding one branched conversation built through the store
    (the same triggers as any append, without an HTTP request per message), never analyzed."""
    server = Server(databases.migrated())
    server.start()
    try:
        tenant, key = server.new_key()
        conversation_id, family_id, last_seq, tips, trunk = run(_build(server.database_url, tenant))
        yield Tree(server, key, conversation_id, family_id, last_seq, tips, trunk)
    finally:
        server.stop()


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


async def _explain(url: str, mode: str, query: str, *args: Any) -> dict[str, Any]:
    """EXPLAIN ANALYZE's plan of `query` as a custom or as a generic plan (the one a prepared
    statement settles on), on a database that has still never been analyzed."""
    conn = await asyncpg.connect(url)
    try:
        assert (await freshness(conn)).never_analyzed
        async with conn.transaction():
            await conn.execute(f"SET LOCAL plan_cache_mode = {mode}")
            text = await conn.fetchval("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + query, *args)
        assert (await freshness(conn)).never_analyzed
    finally:
        await conn.close()
    return json.loads(text)[0]["Plan"]


@pytest.mark.parametrize("mode", ["force_custom_plan", "force_generic_plan"])
def test_leaves_of_a_never_analyzed_tree_are_read_in_one_pass(tree: Tree, mode: str) -> None:
    args = {"family_id": tree.family_id, "conversation_id": tree.conversation_id, "base_id": None, "upto": tree.last_seq}
    plan = run(_explain(tree.server.database_url, mode, Q["list_leaves"].sql, *Q["list_leaves"].args(args)))
    nodes = list(_nodes(plan))
    # No join at all (every join node, nested loop, hash or merge, has a join type), so no scan of
    # the family repeated per message.
    joins = [n["Node Type"] for n in nodes if "Join Type" in n]
    assert joins == [], joins
    assert not [n for n in nodes if n.get("Actual Loops", 1) > 1]
    # Each message's row is read a bounded number of times: the pages touched grow with the tree.
    buffers = plan["Shared Hit Blocks"] + plan["Shared Read Blocks"]
    assert buffers <= 4 * MESSAGES, buffers
    assert plan["Actual Rows"] == len(tree.tips)


def test_leaves_of_a_never_analyzed_tree_over_http(tree: Tree) -> None:
    with tree.server.client(tree.key) as api:
        r = api.get(f"/v1/conversations/{tree.conversation_id}/leaves")
        assert r.status_code == 200, r.text
        leaves = r.json()["leaves"]
        assert {uuid.UUID(leaf["message_id"]) for leaf in leaves} == tree.tips
        assert [leaf["seq"] for leaf in leaves] == sorted(leaf["seq"] for leaf in leaves)
        # A fork at a trunk message with children: its base is its one tip until it writes under it.
        trunk_tip = next(leaf for leaf in leaves if leaf["depth"] == TRUNK - 1)
        trunk_message = api.get(
            f"/v1/conversations/{tree.conversation_id}/messages/{trunk_tip['message_id']}"
        )
        assert trunk_message.status_code == 200, trunk_message.text
        parent = trunk_message.json()["parent_message_id"]
        f = api.post(f"/v1/conversations/{tree.conversation_id}/messages/{parent}/fork", json={})
        assert f.status_code == 201, f.text
        fork_id = f.json()["id"]
        fork_leaves = api.get(f"/v1/conversations/{fork_id}/leaves").json()["leaves"]
        assert [leaf["message_id"] for leaf in fork_leaves] == [parent]
        said = api.post(f"/v1/conversations/{fork_id}/messages", json={"role": "user", "content": "on"})
        assert said.status_code == 201, said.text
        fork_leaves = api.get(f"/v1/conversations/{fork_id}/leaves").json()["leaves"]
        assert [leaf["message_id"] for leaf in fork_leaves] == [said.json()["id"]]


# A probe of a message's children reads that message's children, never the family: a trunk message
# with two children (the trunk's next and a branch's first), one with one, and the trunk's tip.
# A few index and heap pages for each message read, whatever the tree's size; reading the family's
# messages instead takes several hundred (a family of 5,000 messages fills about 450 pages of
# events_runs and events).
PROBE_BUFFERS = 64


def _probed(tree: Tree) -> list[uuid.UUID]:
    return [tree.trunk[500], tree.trunk[501], tree.trunk[-1]]


def _probe_plan_is_bounded(plan: dict[str, Any]) -> None:
    buffers = plan["Shared Hit Blocks"] + plan["Shared Read Blocks"]
    assert buffers <= PROBE_BUFFERS, buffers
    scans = [n for n in _nodes(plan) if n["Node Type"] in ("Seq Scan", "Bitmap Heap Scan")]
    assert scans == [], scans


@pytest.mark.parametrize("mode", ["force_custom_plan", "force_generic_plan"])
def test_nodes_of_a_never_analyzed_tree_are_probed_by_key(tree: Tree, mode: str) -> None:
    # find_nodes is what every append runs (begin_append, through begin_write) to learn whether
    # the message it writes under already has children.
    ids = _probed(tree)
    args = _nodes_args(tree, ids)
    plan = run(_explain(tree.server.database_url, mode, Q["find_nodes"].sql, *Q["find_nodes"].args(args)))
    _probe_plan_is_bounded(plan)
    assert plan["Actual Rows"] == len(ids)


@pytest.mark.parametrize("mode", ["force_custom_plan", "force_generic_plan"])
def test_children_of_a_never_analyzed_tree_are_probed_by_key(tree: Tree, mode: str) -> None:
    parent = tree.trunk[500]
    args = {
        "family_id": tree.family_id,
        "parent_id": parent,
        "conversation_id": tree.conversation_id,
        "base_id": None,
        "depth": 500,
        "upto": tree.last_seq,
    }
    plan = run(_explain(tree.server.database_url, mode, Q["list_children"].sql, *Q["list_children"].args(args)))
    _probe_plan_is_bounded(plan)
    assert plan["Actual Rows"] == 2


def _nodes_args(tree: Tree, ids: list[uuid.UUID]) -> dict[str, object]:
    return {"family_id": tree.family_id, "conversation_id": tree.conversation_id, "ids": ids, "base_id": None, "base_depth": None}


async def _has_children(url: str, tree: Tree, ids: list[uuid.UUID]) -> dict[uuid.UUID, bool]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(Q["find_nodes"].sql, *Q["find_nodes"].args(_nodes_args(tree, ids)))
    finally:
        await conn.close()
    return {r["message_id"]: r["has_children"] for r in rows}


def test_children_of_a_never_analyzed_tree_over_http(tree: Tree) -> None:
    ids = _probed(tree)
    assert run(_has_children(tree.server.database_url, tree, ids)) == {ids[0]: True, ids[1]: True, ids[2]: False}
    base = f"/v1/conversations/{tree.conversation_id}/messages"
    with tree.server.client(tree.key) as api:
        r = api.get(f"{base}/{tree.trunk[500]}/children")
        assert r.status_code == 200, r.text
        children = [c["id"] for c in r.json()["children"]]
        assert children[0] == str(tree.trunk[501]) and len(children) == 2
        # An append under it branches (the append's children probe said it has children).
        said = api.post(base, json={"role": "user", "content": "again", "parent_message_id": str(tree.trunk[500])})
        assert said.status_code == 201, said.text
        r = api.get(f"{base}/{tree.trunk[500]}/children")
        assert [c["id"] for c in r.json()["children"]] == [*children, said.json()["id"]]
        r = api.get(f"{base}/{tree.trunk[-1]}/children")
        assert r.status_code == 200, r.text
        assert r.json()["children"] == []
