"""Concurrent appends: each becomes a sibling; none lost, none duplicated; sequence numbers unique."""

import asyncio
import uuid

import httpx
import pytest

from tests.helpers import create, say
from tests.postgres import fetch



@pytest.mark.slow
def test_fifty_concurrent_appends_to_one_parent_become_fifty_siblings(server, api):
    cid = create(api)["id"]
    parent = say(api, cid, "question")
    auth = api.headers["authorization"]

    async def go():
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(base_url=server.base_url, headers={"Authorization": auth}, limits=limits) as c:
            return await asyncio.gather(*[
                c.post(f"/v1/conversations/{cid}/messages",
                       json={"role": "assistant", "content": f"answer {i}", "parent_message_id": parent["id"]})
                for i in range(50)
            ])

    responses = asyncio.run(go())
    assert [r.status_code for r in responses] == [201] * 50
    made = [r.json() for r in responses]
    assert len({m["id"] for m in made}) == 50
    assert len({m["seq"] for m in made}) == 50
    children = api.get(f"/v1/conversations/{cid}/messages/{parent['id']}/children").json()["children"]
    assert sorted(c["content"] for c in children) == sorted(f"answer {i}" for i in range(50))
    conv = api.get(f"/v1/conversations/{cid}").json()
    assert (conv["message_count"], conv["leaf_count"]) == (51, 50)
    rows = fetch(server.database_url, "SELECT seq FROM events WHERE conversation_id = $1", uuid.UUID(cid))
    assert len(rows) == len({r["seq"] for r in rows}) == 52  # created + question + 50 answers
    # The last append to commit holds the head.
    assert conv["head_id"] == max(made, key=lambda m: m["seq"])["id"]


@pytest.mark.slow
def test_concurrent_appends_to_the_head_form_siblings_or_a_chain_but_lose_nothing(server, api):
    cid = create(api)["id"]
    auth = api.headers["authorization"]

    async def go():
        async with httpx.AsyncClient(base_url=server.base_url, headers={"Authorization": auth}) as c:
            return await asyncio.gather(*[
                c.post(f"/v1/conversations/{cid}/messages", json={"role": "user", "content": f"m{i}"})
                for i in range(20)
            ])

    responses = asyncio.run(go())
    assert all(r.status_code == 201 for r in responses)
    tree = api.get(f"/v1/conversations/{cid}/tree").json()
    assert len(tree["messages"]) == 20
    # Appends to the head are serialized per conversation: they form one chain, in seq order.
    ordered = sorted(tree["messages"], key=lambda m: m["seq"])
    assert [m["parent_message_id"] for m in ordered[1:]] == [m["id"] for m in ordered[:-1]]
