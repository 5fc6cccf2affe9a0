"""The context a turn sends its model is the path its conversation sees, read by runs through
branches and forks of forks, with what was redacted or erased withheld."""

from __future__ import annotations

from typing import Any

import httpx

from tests.helpers import create, say
from tests.turnkit import sent_messages

PLACEHOLDER = "[redacted]"


def fork(api: httpx.Client, cid: str, mid: str) -> str:
    r = api.post(f"/v1/conversations/{cid}/messages/{mid}/fork", json={})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def redact(api: httpx.Client, cid: str, mid: str, **body: Any) -> None:
    r = api.post(f"/v1/conversations/{cid}/messages/{mid}/redact", json={"reason": "personal data", **body})
    assert r.status_code in (200, 201), r.text


def turn(api: httpx.Client, cid: str, content: str, **body: Any) -> dict[str, Any]:
    r = api.post(f"/v1/conversations/{cid}/turns", json={"content": content, **body})
    assert r.status_code == 201, r.text
    return r.json()


def test_a_turn_in_a_fork_of_a_fork_sends_the_path_it_sees_with_redactions_withheld(model_api, upstream):
    cid = create(model_api, system="rules")["id"]
    u1 = say(model_api, cid, "my number is 555-0100")
    a1 = say(model_api, cid, "noted", role="assistant")
    say(model_api, cid, "and my address?")  # a sibling of the branch below: not on its path
    branch = say(model_api, cid, "another question", parent_message_id=a1["id"])
    erased = say(model_api, cid, "erase me", parent_message_id=branch["id"])
    redact(model_api, cid, u1["id"])
    redact(model_api, cid, erased["id"], erase=True)
    first = fork(model_api, cid, erased["id"])
    own = say(model_api, first, "in the fork")
    second = fork(model_api, first, own["id"])
    say(model_api, second, "in the fork of the fork")

    reply = turn(model_api, second, "and now?")
    [sent] = sent_messages(upstream)
    assert [m["content"] for m in sent] == [
        "rules",
        PLACEHOLDER,
        "noted",
        "another question",
        PLACEHOLDER,
        "in the fork",
        "in the fork of the fork",
        "and now?",
    ]
    # Recorded as one run along the path, across both forks, from the root to the turn's own message.
    [run] = reply["assistant_message"]["generation"]["context"]
    assert (run["last_id"], run["count"]) == (reply["user_message_id"], len(sent))


def test_a_deep_turn_sends_all_of_its_context(model_api, upstream):
    cid = create(model_api, system="rules")["id"]
    said = [say(model_api, cid, f"message {i}")["content"] for i in range(300)]
    turn(model_api, cid, "and now?")
    [sent] = sent_messages(upstream)
    assert [m["content"] for m in sent] == ["rules", *said, "and now?"]
