"""Every write through a fork lands in the fork, on forks and on forks of forks: the source (and the
fork in between) never changes because of an operation on a fork."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.helpers import create, problem, say
from tests.postgres import fetch
from tests.turnkit import assert_settled, turn



def fork(api: httpx.Client, cid: str, mid: str) -> str:
    r = api.post(f"/v1/conversations/{cid}/messages/{mid}/fork", json={})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def snapshot(api: httpx.Client, database_url: str, cid: str) -> dict[str, Any]:
    """All a conversation is: its summary, its tree, and its events in the log."""
    rows = fetch(database_url, "SELECT seq FROM events WHERE conversation_id = $1 ORDER BY seq", uuid.UUID(cid))
    return {
        "summary": api.get(f"/v1/conversations/{cid}").json(),
        "tree": api.get(f"/v1/conversations/{cid}/tree").json(),
        "events": [r["seq"] for r in rows],
    }


@pytest.fixture(params=["fork", "fork of a fork"])
def family(request, model_api, model_server):
    """sys → u1 → a1 → u2 → a2 in a source; a fork at a2 (and, for a fork of a fork, a fork of that
    fork at a2 again): the writer sees every message of the source's path as inherited."""
    api = model_api
    cid = create(api, system="rules")["id"]
    first = turn(api, cid, "one", provider="echo")
    second = turn(api, cid, "two", provider="echo")
    writer = fork(api, cid, second["assistant_message_id"])
    ancestors = [cid]
    if request.param == "fork of a fork":
        ancestors.append(writer)
        writer = fork(api, writer, second["assistant_message_id"])
    before = {c: snapshot(api, model_server.database_url, c) for c in ancestors}
    ids = {
        "u1": first["user_message_id"], "a1": first["assistant_message_id"],
        "u2": second["user_message_id"], "a2": second["assistant_message_id"],
    }  # fmt: skip

    def unchanged() -> None:
        for c in ancestors:
            assert snapshot(api, model_server.database_url, c) == before[c], f"{c} changed"

    return {"api": api, "writer": writer, "ids": ids, "unchanged": unchanged, "db": model_server.database_url}


def own_events(f: dict[str, Any]) -> list[str]:
    rows = fetch(f["db"], "SELECT type FROM events WHERE conversation_id = $1 ORDER BY seq", uuid.UUID(f["writer"]))
    return [r["type"] for r in rows]


def test_regenerating_an_inherited_reply_adds_the_reply_to_the_fork(family):
    api, writer, ids = family["api"], family["writer"], family["ids"]
    r = api.post(f"/v1/conversations/{writer}/messages/{ids['a1']}/regenerate", json={"provider": "echo"})
    assert r.status_code == 201, r.text
    result = r.json()
    assert result["conversation_id"] == writer
    reply = result["assistant_message"]
    assert reply["conversation_id"] == writer and reply["parent_message_id"] == ids["u1"]
    assert r.headers["location"] == f"/v1/conversations/{writer}/messages/{reply['id']}"
    assert api.get(f"/v1/conversations/{writer}").json()["head_id"] == reply["id"]
    assert api.get(f"/v1/conversations/{writer}/messages/{reply['id']}").status_code == 200
    assert own_events(family)[-1] == "message_appended"
    family["unchanged"]()
    assert_settled(family["db"], writer)


def test_a_streamed_regeneration_of_an_inherited_reply_lands_in_the_fork(family):
    api, writer, ids = family["api"], family["writer"], family["ids"]
    body = {"provider": "echo", "stream": True}
    with api.stream("POST", f"/v1/conversations/{writer}/messages/{ids['a2']}/regenerate", json=body) as r:
        assert r.status_code == 200
        text = r.read().decode()
    assert f'"conversation_id":"{writer}"' in text and "event: done" in text
    assert api.get(f"/v1/conversations/{writer}").json()["message_count"] == 6
    family["unchanged"]()
    assert_settled(family["db"], writer)


def test_a_turn_under_an_inherited_message_lands_in_the_fork(family):
    api, writer, ids = family["api"], family["writer"], family["ids"]
    result = turn(api, writer, "again", provider="echo", parent_message_id=ids["a1"])
    assert result["conversation_id"] == writer
    assert result["user_message"]["conversation_id"] == writer == result["assistant_message"]["conversation_id"]
    assert result["user_message"]["parent_message_id"] == ids["a1"]
    family["unchanged"]()
    assert_settled(family["db"], writer)


def test_a_chat_completion_under_an_inherited_message_lands_in_the_fork(family):
    api, writer, ids = family["api"], family["writer"], family["ids"]
    body = {
        "model": "echo/echo", "conversation_id": writer, "parent_message_id": ids["u1"],
        "messages": [{"role": "assistant", "content": "mine"}, {"role": "user", "content": "more"}],
    }  # fmt: skip
    r = api.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["conversation_id"] == writer
    reply = api.get(f"/v1/conversations/{writer}/messages/{r.json()['message_id']}").json()
    assert reply["conversation_id"] == writer
    family["unchanged"]()


def test_an_append_under_an_inherited_message_lands_in_the_fork(family):
    api, writer, ids = family["api"], family["writer"], family["ids"]
    m = say(api, writer, "branch", parent_message_id=ids["u1"], role="assistant")
    assert m["conversation_id"] == writer and m["parent_message_id"] == ids["u1"]
    keyed = api.post(
        f"/v1/conversations/{writer}/messages",
        json={"role": "user", "content": "keyed", "parent_message_id": ids["a1"]},
        headers={"Idempotency-Key": f"k-{uuid.uuid4()}"},
    )
    assert keyed.status_code == 201 and keyed.json()["conversation_id"] == writer
    family["unchanged"]()


def test_moving_the_head_to_an_inherited_message_moves_the_forks_head(family):
    api, writer, ids = family["api"], family["writer"], family["ids"]
    r = api.put(f"/v1/conversations/{writer}/head", json={"message_id": ids["u1"]})
    assert r.status_code == 200 and r.json()["head_id"] == ids["u1"]
    assert own_events(family)[-1] == "head_moved"
    family["unchanged"]()


@pytest.mark.parametrize("erase", [False, True])
def test_redacting_an_inherited_message_through_a_fork_is_refused_and_changes_nothing(family, erase):
    api, writer, ids = family["api"], family["writer"], family["ids"]
    events = own_events(family)
    for mid in ids.values():
        r = api.post(f"/v1/conversations/{writer}/messages/{mid}/redact", json={"reason": "pii", "erase": erase})
        body = problem(r, 409, "message-inherited")
        assert body["context"]["message_id"] == mid
        assert "redacted" not in api.get(f"/v1/conversations/{writer}/messages/{mid}").json()
    assert own_events(family) == events
    family["unchanged"]()


def test_a_fork_redacts_and_erases_its_own_messages_without_touching_the_source(family):
    api, writer = family["api"], family["writer"]
    own = say(api, writer, "my secret")
    r = api.post(f"/v1/conversations/{writer}/messages/{own['id']}/redact", json={"reason": "pii", "erase": True})
    assert r.status_code == 201, r.text
    assert r.json()["redacted"]["erased"] is True
    assert api.get(f"/v1/conversations/{writer}/audit").json()["valid"] is True
    family["unchanged"]()
