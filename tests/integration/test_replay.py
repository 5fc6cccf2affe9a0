"""Replay through the API: `as_of` shows a conversation exactly as it stood after any event."""

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from tests.helpers import create, problem, say

ENDPOINTS = ("", "/tree", "/leaves", "/context")


def get(api, path, as_of=None):
    r = api.get(path, params={} if as_of is None else {"as_of": str(as_of)})
    assert r.status_code == 200, r.text
    return r.json()


def snapshot(api, cid, as_of=None):
    """Everything the read endpoints say about a conversation."""
    return {e: get(api, f"/v1/conversations/{cid}{e}", as_of) for e in ENDPOINTS}


def ids(messages):
    return [m["id"] for m in messages]


@pytest.fixture
def history(api):
    """A conversation and its state after each of its events, read live as it happened."""
    conv = create(api, title="t")
    cid = conv["id"]
    states = [(conv["last_seq"], snapshot(api, cid))]
    a = say(api, cid, "a")
    states.append((a["seq"], snapshot(api, cid)))
    b = say(api, cid, "b", role="assistant")
    states.append((b["seq"], snapshot(api, cid)))
    c = say(api, cid, "c", parent_message_id=a["id"])  # a branch: the head moves to c
    states.append((c["seq"], snapshot(api, cid)))
    moved = api.put(f"/v1/conversations/{cid}/head", json={"message_id": b["id"]}).json()
    states.append((moved["last_seq"], snapshot(api, cid)))
    d = say(api, cid, "d")
    states.append((d["seq"], snapshot(api, cid)))
    return {"id": cid, "a": a, "b": b, "c": c, "d": d, "states": states}


def test_as_of_every_event_is_the_state_read_live_after_it(api, history):
    for seq, live in history["states"]:
        past = snapshot(api, history["id"], seq)
        # The live summary also carries an ETag; the bodies are the same.
        assert past == live, seq


def test_as_of_after_a_branch_and_a_head_move_shows_the_earlier_state(api, history):
    cid, a, b, c = history["id"], history["a"], history["b"], history["c"]
    before_branch = get(api, f"/v1/conversations/{cid}/context", b["seq"])
    assert ids(before_branch["messages"]) == [a["id"], b["id"]]
    assert before_branch["messages"][1]["sibling_count"] == 1
    after_branch = get(api, f"/v1/conversations/{cid}/context", c["seq"])
    assert ids(after_branch["messages"]) == [a["id"], c["id"]]
    assert [(m["sibling_position"], m["sibling_count"]) for m in after_branch["messages"]] == [(1, 1), (2, 2)]
    summary = get(api, f"/v1/conversations/{cid}", c["seq"])
    assert (summary["head_id"], summary["message_count"], summary["leaf_count"], summary["last_seq"]) == (
        c["id"],
        3,
        2,
        c["seq"],
    )
    leaves = get(api, f"/v1/conversations/{cid}/leaves", b["seq"])
    assert (leaves["head_id"], [leaf["message_id"] for leaf in leaves["leaves"]]) == (b["id"], [b["id"]])
    # A message's context as of an event before the message existed: not found.
    problem(
        api.get(f"/v1/conversations/{cid}/messages/{c['id']}/context", params={"as_of": b["seq"]}),
        404,
        "message-not-found",
    )
    ctx = get(api, f"/v1/conversations/{cid}/messages/{b['id']}/context", c["seq"])
    assert [(m["sibling_position"], m["sibling_count"]) for m in ctx["messages"]] == [(1, 1), (1, 2)]
    # A seq from between two of this conversation's events reads as the earlier one.
    other = create(api)
    assert get(api, f"/v1/conversations/{cid}", other["last_seq"]) == get(api, f"/v1/conversations/{cid}")
    # Past the newest event: the current state.
    assert snapshot(api, cid, 2**63 - 1) == snapshot(api, cid)


def test_a_past_summary_has_no_etag(api, history):
    r = api.get(f"/v1/conversations/{history['id']}", params={"as_of": history["a"]["seq"]})
    assert r.status_code == 200 and "etag" not in r.headers
    assert api.get(f"/v1/conversations/{history['id']}").headers["etag"] == f'"{history["d"]["id"]}"'


def test_as_of_accepts_an_rfc3339_timestamp(api, history):
    cid, a, b = history["id"], history["a"], history["b"]
    at_b = datetime.fromisoformat(b["created_at"])
    assert get(api, f"/v1/conversations/{cid}", at_b.isoformat())["head_id"] == b["id"]
    just_before_b = at_b - timedelta(microseconds=1)
    assert get(api, f"/v1/conversations/{cid}/tree", just_before_b.isoformat())["messages"] == [
        m for m in get(api, f"/v1/conversations/{cid}/tree")["messages"] if m["id"] == a["id"]
    ]
    # Other spellings of the same instant: Z, another offset, and a `+` the client did not encode.
    utc = at_b.astimezone(timezone.utc)
    assert get(api, f"/v1/conversations/{cid}", utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))["head_id"] == b["id"]
    shifted = utc.astimezone(timezone(timedelta(hours=5, minutes=30)))
    assert get(api, f"/v1/conversations/{cid}/leaves", shifted.isoformat())["head_id"] == b["id"]
    r = api.get(f"/v1/conversations/{cid}/context?as_of={shifted.isoformat()}")  # `+` sent as is
    assert r.status_code == 200 and r.json()["leaf_id"] == b["id"]


def test_as_of_before_the_conversation_existed_is_404(api, history):
    cid = history["id"]
    created_seq = history["states"][0][0]
    for endpoint in ENDPOINTS:
        for as_of in (created_seq - 1, 0, "2000-01-01T00:00:00Z"):
            r = api.get(f"/v1/conversations/{cid}{endpoint}", params={"as_of": str(as_of)})
            problem(r, 404, "conversation-not-found")
    problem(
        api.get(f"/v1/conversations/{cid}/messages/{history['a']['id']}/context", params={"as_of": created_seq - 1}),
        404,
        "conversation-not-found",
    )
    # At its creation event it exists, empty.
    summary = get(api, f"/v1/conversations/{cid}", created_seq)
    assert (summary["head_id"], summary["message_count"], summary["leaf_count"]) == (None, 0, 0)
    assert get(api, f"/v1/conversations/{cid}/context", created_seq)["messages"] == []


@pytest.mark.parametrize(
    "as_of",
    ["abc", "-1", "1.5", "", "99999999999999999999", "2025-01-01T00:00:00", "2025-13-01T00:00:00Z", "2025-01-01"],
)
def test_a_malformed_as_of_is_422(api, history, as_of):
    for endpoint in (*ENDPOINTS, f"/messages/{history['a']['id']}/context"):
        body = problem(
            api.get(f"/v1/conversations/{history['id']}{endpoint}", params={"as_of": as_of}), 422, "invalid-request"
        )
        assert "as_of" in body["detail"] or "as_of" in str(body.get("errors")), body


def test_as_of_is_scoped_to_the_tenant(api, server, history):
    _, key = server.new_key()
    with server.client(key) as other:
        for endpoint in ENDPOINTS:
            r = other.get(f"/v1/conversations/{history['id']}{endpoint}", params={"as_of": history["d"]["seq"]})
            problem(r, 404, "conversation-not-found")


def test_as_of_a_fork(api):
    src = create(api, system="s")
    a = say(api, src["id"], "a")
    b = say(api, src["id"], "b")
    f = api.post(f"/v1/conversations/{src['id']}/messages/{a['id']}/fork", json={"title": "f"}).json()
    later_in_source = say(api, src["id"], "c")
    x = say(api, f["id"], "x", parent_message_id=src["head_id"])

    problem(api.get(f"/v1/conversations/{f['id']}", params={"as_of": b["seq"]}), 404, "conversation-not-found")
    at_fork = get(api, f"/v1/conversations/{f['id']}", f["last_seq"])
    assert at_fork == f
    # Events of the source after the fork change nothing in it.
    assert snapshot(api, f["id"], later_in_source["seq"]) == snapshot(api, f["id"], f["last_seq"])
    ctx = get(api, f"/v1/conversations/{f['id']}/context", f["last_seq"])
    assert ids(ctx["messages"]) == [src["head_id"], a["id"]]
    assert [m["conversation_id"] for m in ctx["messages"]] == [src["id"]] * 2
    leaves = get(api, f"/v1/conversations/{f['id']}/leaves", f["last_seq"])
    assert [leaf["message_id"] for leaf in leaves["leaves"]] == [a["id"]]
    now = snapshot(api, f["id"])
    assert snapshot(api, f["id"], x["seq"]) == now
    assert [leaf["message_id"] for leaf in now["/leaves"]["leaves"]] == [a["id"], x["id"]]
    assert now[""]["forked_from"] == {"conversation_id": src["id"], "message_id": a["id"]}
    problem(
        api.get(f"/v1/conversations/{f['id']}/messages/{x['id']}/context", params={"as_of": f["last_seq"]}),
        404,
        "message-not-found",
    )
    assert ids(get(api, f"/v1/conversations/{f['id']}/messages/{a['id']}/context", f["last_seq"])["messages"]) == [
        src["head_id"],
        a["id"],
    ]


def test_as_of_an_unknown_conversation_is_404(api):
    problem(api.get(f"/v1/conversations/{uuid.uuid4()}/tree", params={"as_of": "1"}), 404, "conversation-not-found")
