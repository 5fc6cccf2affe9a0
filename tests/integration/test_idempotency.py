"""Retries never create duplicates: client ids, Idempotency-Key, and retries racing the original."""

import asyncio
import uuid

import httpx
import pytest

from tests.helpers import create, problem, say
from tests.postgres import fetch



def test_retrying_an_append_with_the_same_id_returns_the_original(api):
    cid = create(api)["id"]
    mid = str(uuid.uuid4())
    first = api.post(f"/v1/conversations/{cid}/messages", json={"id": mid, "role": "user", "content": "hi"})
    assert first.status_code == 201
    retry = api.post(f"/v1/conversations/{cid}/messages", json={"id": mid, "role": "user", "content": "hi"})
    assert retry.status_code == 200 and retry.json() == first.json()
    conv = api.get(f"/v1/conversations/{cid}").json()
    assert conv["message_count"] == 1 and conv["last_seq"] == first.json()["seq"]


def test_same_message_id_with_other_content_is_a_conflict(api):
    cid = create(api)["id"]
    mid = str(uuid.uuid4())
    say(api, cid, "hi", id=mid)
    problem(api.post(f"/v1/conversations/{cid}/messages", json={"id": mid, "role": "user", "content": "bye"}),
            409, "message-id-conflict")


def test_idempotency_key_replays_the_original_response(api):
    cid = create(api)["id"]
    headers = {"Idempotency-Key": "k-" + uuid.uuid4().hex}
    body = {"role": "user", "content": "once"}
    first = api.post(f"/v1/conversations/{cid}/messages", json=body, headers=headers)
    again = api.post(f"/v1/conversations/{cid}/messages", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert api.get(f"/v1/conversations/{cid}").json()["message_count"] == 1


def test_idempotency_key_with_a_different_request_is_refused(api):
    cid = create(api)["id"]
    headers = {"Idempotency-Key": "k-" + uuid.uuid4().hex}
    assert api.post(f"/v1/conversations/{cid}/messages", json={"role": "user", "content": "a"}, headers=headers).status_code == 201
    problem(api.post(f"/v1/conversations/{cid}/messages", json={"role": "user", "content": "b"}, headers=headers),
            422, "idempotency-key-reused")
    assert api.get(f"/v1/conversations/{cid}").json()["message_count"] == 1


def test_idempotency_keys_belong_to_their_tenant(server, api):
    key = "shared-" + uuid.uuid4().hex
    cid = create(api)["id"]
    assert api.post(f"/v1/conversations/{cid}/messages", json={"role": "user", "content": "a"},
                    headers={"Idempotency-Key": key}).status_code == 201
    _, other_key = server.new_key()
    with server.client(other_key) as other:
        r = other.post("/v1/conversations", json={"title": "mine"}, headers={"Idempotency-Key": key})
        assert r.status_code == 201 and r.json()["title"] == "mine"


def test_creating_a_conversation_with_a_client_id_is_idempotent(api):
    cid = str(uuid.uuid4())
    body = {"id": cid, "title": "t", "system": "s"}
    first = api.post("/v1/conversations", json=body)
    assert first.status_code == 201
    retry = api.post("/v1/conversations", json=body)
    assert retry.status_code == 200 and retry.json()["id"] == cid
    assert retry.json()["head_id"] == first.json()["head_id"]
    problem(api.post("/v1/conversations", json=body | {"title": "other"}), 409, "conversation-id-conflict")
    problem(api.post("/v1/conversations", json=body | {"system": "other"}), 409, "conversation-id-conflict")


@pytest.mark.slow
def test_concurrent_retries_with_one_key_create_one_message(server, api):
    cid = create(api)["id"]
    key = "race-" + uuid.uuid4().hex
    auth = api.headers["authorization"]

    async def go():
        async with httpx.AsyncClient(base_url=server.base_url, headers={"Authorization": auth}) as client:
            return await asyncio.gather(*[
                client.post(f"/v1/conversations/{cid}/messages", json={"role": "user", "content": "x"},
                            headers={"Idempotency-Key": key})
                for _ in range(10)
            ])

    responses = asyncio.run(go())
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["id"] for r in responses}) == 1
    rows = fetch(server.database_url, "SELECT count(*) FROM events WHERE conversation_id = $1 AND type = 'message_appended'",
                 uuid.UUID(cid))
    assert rows[0][0] == 1


@pytest.mark.slow
def test_concurrent_retries_with_one_client_id_create_one_message(server, api):
    cid = create(api)["id"]
    mid = str(uuid.uuid4())
    auth = api.headers["authorization"]

    async def go():
        async with httpx.AsyncClient(base_url=server.base_url, headers={"Authorization": auth}) as client:
            return await asyncio.gather(*[
                client.post(f"/v1/conversations/{cid}/messages", json={"id": mid, "role": "user", "content": "x"})
                for _ in range(10)
            ])

    responses = asyncio.run(go())
    assert sorted(r.status_code for r in responses) == [200] * 9 + [201]
    assert {r.json()["seq"] for r in responses} == {responses[0].json()["seq"]}
    assert api.get(f"/v1/conversations/{cid}").json()["message_count"] == 1
