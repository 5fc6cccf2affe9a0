"""Bad input always gets a clear 4xx problem, and never changes anything."""

import uuid

import pytest

from tests.helpers import create, problem


@pytest.mark.parametrize(
    "body",
    [
        {"role": "wizard", "content": "x"},
        {"content": "x"},
        {"role": "user", "content": "x", "id": "not-a-uuid"},
        {"role": "user", "content": "x", "parent_message_id": "123"},
        {"role": "user", "content": "x", "metadata": ["not", "an", "object"]},
        {"role": "user", "content": "x", "unexpected": 1},
        {"role": "user", "content": "x" * 1_000_001},
        {"role": "user", "content": 5},
        [],
        "text",
    ],
)
def test_invalid_message_bodies_are_422_and_record_nothing(api, body):
    cid = create(api)["id"]
    body_problem = problem(api.post(f"/v1/conversations/{cid}/messages", json=body), 422, "invalid-request")
    assert body_problem["detail"]
    assert api.get(f"/v1/conversations/{cid}").json()["last_seq"] == api.get(f"/v1/conversations/{cid}").json()["last_seq"]
    assert api.get(f"/v1/conversations/{cid}").json()["message_count"] == 0


@pytest.mark.parametrize("body", [{"role": "user", "content": ""}, {"role": "user"}, {"role": "user", "content": None}])
def test_a_message_that_says_nothing_is_an_invalid_message_naming_content(api, body):
    cid = create(api)["id"]
    found = problem(api.post(f"/v1/conversations/{cid}/messages", json=body), 422, "invalid-message")
    assert found["context"] == {"field": "content"}
    assert api.get(f"/v1/conversations/{cid}").json()["message_count"] == 0


def test_a_body_that_is_not_json_is_a_400_problem(api):
    cid = create(api)["id"]
    r = api.post(f"/v1/conversations/{cid}/messages", content=b"{not json", headers={"Content-Type": "application/json"})
    problem(r, 400, "malformed-request")


def test_invalid_ids_in_the_path_are_422(api):
    problem(api.get("/v1/conversations/not-a-uuid"), 422, "invalid-request")
    cid = create(api)["id"]
    problem(api.get(f"/v1/conversations/{cid}/messages/nope/context"), 422, "invalid-request")


def test_invalid_conversation_bodies_are_422(api):
    for body in ({"id": "x"}, {"title": 3}, {"system": ""}, {"metadata": 1}, {"title": "t" * 501}):
        problem(api.post("/v1/conversations", json=body), 422, "invalid-request")


def test_oversized_idempotency_key_is_422(api):
    r = api.post("/v1/conversations", json={}, headers={"Idempotency-Key": "k" * 256})
    problem(r, 422, "invalid-request")


def test_unknown_paths_are_404_problems(api):
    problem(api.get(f"/v1/nothing/{uuid.uuid4()}"), 404, "not-found")


def test_text_holding_u0000_is_refused_as_invalid_and_nothing_is_written(api):
    cid = api.post("/v1/conversations", json={}).json()["id"]
    for path, body in [
        ("/v1/conversations", {"title": "a\u0000b"}),
        ("/v1/conversations", {"system": "a\u0000b"}),
        (f"/v1/conversations/{cid}/messages", {"role": "user", "content": "a\u0000b"}),
        (f"/v1/conversations/{cid}/turns", {"content": "a\u0000b", "provider": "echo"}),
        (f"/v1/conversations/{cid}/turns", {"content": "fine", "provider": "echo\u0000"}),
    ]:
        problem(api.post(path, json=body), 422, "invalid-request")
    chat = {"model": "echo", "messages": [{"role": "user", "content": "a\u0000b"}]}
    refused = api.post("/v1/chat/completions", json=chat)  # the OpenAI door answers OpenAI's error object
    assert refused.status_code == 422 and refused.json()["error"]["param"] == "messages[0].content"
    assert api.get(f"/v1/conversations/{cid}").json()["message_count"] == 0
    # Metadata too, though JSON could carry it: the log's SQL reads payloads as text (tests/integration/test_hostile_text.py).
    r = api.post("/v1/conversations", json={"metadata": {"k": "v\u0000"}})
    assert problem(r, 422, "invalid-request")["context"]["parameter"] == "metadata.k"
