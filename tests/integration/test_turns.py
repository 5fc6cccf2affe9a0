"""Turns against a real fake model server: context and windows, the generation record, regenerate,
editing as branching, streaming, retries by id or Idempotency-Key, and the offline echo provider."""

from __future__ import annotations

import uuid

from service.domain.window import MESSAGE_OVERHEAD, REPLY_OVERHEAD
from service.upstream.tokens import counter_for
from tests.fakeupstream import Fault
from tests.helpers import create, problem
from tests.turnkit import assert_settled, sent_messages, sse, turn, wait_for

HELLO = "Hello from fake-large. You said: "


def chat(messages: list[dict]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in messages]


def test_a_turn_appends_the_user_message_and_the_reply_under_it(model_api, model_server, upstream):
    conv = create(model_api, system="Be brief.")
    cid = conv["id"]
    result = turn(model_api, cid, "what is two plus two")
    user, reply = result["user_message"], result["assistant_message"]
    assert (result["conversation_id"], result["provider"], result["model"]) == (cid, "fake", "fake-large")
    assert (result["user_message_id"], result["assistant_message_id"]) == (user["id"], reply["id"])
    assert user["parent_message_id"] == conv["head_id"] and user["role"] == "user"
    assert reply["parent_message_id"] == user["id"] and reply["role"] == "assistant"
    assert reply["content"] == HELLO + "what is two plus two"
    assert model_api.get(f"/v1/conversations/{cid}").json()["head_id"] == reply["id"]
    assert model_api.get(f"/v1/conversations/{cid}/messages/{reply['id']}").json() == reply
    assert chat(sent_messages(upstream)[0]) == [("system", "Be brief."), ("user", "what is two plus two")]
    assert_settled(model_server.database_url, cid)


def test_the_reply_records_how_it_was_generated_and_what_the_model_saw(model_api, upstream):
    cid = create(model_api, system="Be brief.")["id"]
    first = turn(model_api, cid, "one")
    params = {"temperature": 0.5, "max_tokens": 50, "top_p": 0.9, "stop": ["END"], "seed": 7}
    second = turn(model_api, cid, "two three", params=params)
    g = second["assistant_message"]["generation"]
    path = model_api.get(f"/v1/conversations/{cid}/messages/{second['user_message_id']}/context").json()
    ids = [m["id"] for m in path["messages"]]
    assert g["context"] == [{"first_id": ids[0], "last_id": ids[-1], "count": len(ids)}]  # the whole path
    assert g["context_ids"] == []  # the form replies recorded before `context`, written empty since
    assert (g["provider"], g["model"], g["requested_model"]) == ("fake", "fake-large", "fake-large")
    assert (g["finish_reason"], g["response_id"], g["interruption"]) == ("stop", "chatcmpl-fake0001", None)
    words_sent = len(["Be", "brief.", "one"]) + len(first["assistant_message"]["content"].split()) + 2
    assert g["prompt_tokens"] == words_sent  # the fake counts words
    assert g["completion_tokens"] == len((HELLO + "two three").split())
    assert 0 < g["first_token_ms"] <= g["latency_ms"]
    assert g["params"] == params
    sent = [r.body for r in upstream.requests if r.method == "POST"][-1]
    assert {k: sent[k] for k in params} == params  # and the provider was sent them
    # The feed, the auditor's view, says which provider and model wrote the reply too.
    events = model_api.get(f"/v1/conversations/{cid}/events").json()["items"]
    [reply] = [e for e in events if e["payload"].get("message_id") == second["assistant_message_id"]]
    assert reply["payload"]["generation"]["model"] == "fake-large"
    assert reply["payload"]["generation"]["context"] == g["context"]


def test_the_full_window_sends_the_whole_path(model_api, upstream):
    cid = create(model_api, system="rules")["id"]
    turn(model_api, cid, "u1")
    turn(model_api, cid, "u2", window={"strategy": "full"})
    assert chat(sent_messages(upstream)[-1]) == [
        ("system", "rules"),
        ("user", "u1"),
        ("assistant", HELLO + "u1"),
        ("user", "u2"),
    ]


def test_the_last_window_keeps_the_final_messages_and_every_system_message(model_api, upstream):
    cid = create(model_api, system="rules")["id"]
    turn(model_api, cid, "u1")
    turn(model_api, cid, "u2")
    turn(model_api, cid, "u3", window={"strategy": "last", "messages": 2})
    assert chat(sent_messages(upstream)[-1]) == [("system", "rules"), ("assistant", HELLO + "u2"), ("user", "u3")]


def test_the_tokens_window_keeps_the_newest_messages_that_fit(model_api, model_server, upstream):
    cid = create(model_api, system="rules")["id"]
    turn(model_api, cid, "the first question")
    count = counter_for("fake-large")
    kept = ["rules", HELLO + "the first question", "the second question"]
    budget = REPLY_OVERHEAD + sum(count(text) + MESSAGE_OVERHEAD for text in kept)
    turn(model_api, cid, "the second question", window={"strategy": "tokens", "max_tokens": budget})
    assert [content for _, content in chat(sent_messages(upstream)[-1])] == kept
    # One token less and the reply no longer fits: only the rules and the new message go.
    turn(model_api, cid, "the second question", window={"strategy": "tokens", "max_tokens": budget - 1})
    assert [c for _, c in chat(sent_messages(upstream)[-1])] == ["rules", "the second question"]
    assert_settled(model_server.database_url, cid)


def test_a_turn_whose_own_message_does_not_fit_the_token_window_is_refused_and_not_recorded(model_api, upstream):
    cid = create(model_api, system="rules")["id"]
    before = model_api.get(f"/v1/conversations/{cid}").json()
    r = model_api.post(
        f"/v1/conversations/{cid}/turns",
        json={"content": "a rather long question " * 20, "window": {"strategy": "tokens", "max_tokens": 10}},
    )
    body = problem(r, 422, "invalid-request")
    assert body["context"]["max_tokens"] == 10 and body["context"]["tokens"] > 10
    assert model_api.get(f"/v1/conversations/{cid}").json() == before
    assert sent_messages(upstream) == []


def test_windows_and_params_are_validated(model_api):
    cid = create(model_api)["id"]
    for body in (
        {"window": {"strategy": "last"}},
        {"window": {"strategy": "last", "messages": 0}},
        {"window": {"strategy": "everything"}},
        {"params": {"temperature": 3}},
        {"params": {"unknown": 1}},
    ):
        problem(model_api.post(f"/v1/conversations/{cid}/turns", json={"content": "x", **body}), 422, "invalid-request")
    problem(
        model_api.post(f"/v1/conversations/{cid}/turns", json={"content": "x", "provider": "nope"}),
        422,
        "unknown-provider",
    )
    problem(
        model_api.post(f"/v1/conversations/{uuid.uuid4()}/turns", json={"content": "x"}), 404, "conversation-not-found"
    )
    problem(
        model_api.post(f"/v1/conversations/{cid}/turns", json={"content": "x", "parent_message_id": str(uuid.uuid4())}),
        404,
        "parent-not-found",
    )


def test_regenerate_adds_a_sibling_reply_and_moves_the_head_to_it(model_api, model_server, upstream):
    cid = create(model_api, system="rules")["id"]
    first = turn(model_api, cid, "question")
    r = model_api.post(f"/v1/conversations/{cid}/messages/{first['assistant_message_id']}/regenerate", json={})
    assert r.status_code == 201, r.text
    again = r.json()
    assert again["user_message_id"] == first["user_message_id"]
    assert again["assistant_message"]["parent_message_id"] == first["user_message_id"]
    assert again["assistant_message_id"] != first["assistant_message_id"]
    assert model_api.get(f"/v1/conversations/{cid}").json()["head_id"] == again["assistant_message_id"]
    children = model_api.get(f"/v1/conversations/{cid}/messages/{first['user_message_id']}/children").json()
    assert [c["id"] for c in children["children"]] == [first["assistant_message_id"], again["assistant_message_id"]]
    first_sent, second_sent = sent_messages(upstream)
    assert first_sent == second_sent  # the same context, answered again
    assert_settled(model_server.database_url, cid)


def test_regenerate_takes_only_an_assistant_reply(model_api):
    cid = create(model_api)["id"]
    result = turn(model_api, cid, "question", provider="echo")
    url = f"/v1/conversations/{cid}/messages/{result['user_message_id']}/regenerate"
    problem(model_api.post(url, json={}), 422, "invalid-request")
    problem(
        model_api.post(f"/v1/conversations/{cid}/messages/{uuid.uuid4()}/regenerate", json={}), 404, "message-not-found"
    )


def test_editing_a_user_message_is_a_turn_under_its_parent_a_new_branch(model_api, model_server, upstream):
    cid = create(model_api)["id"]
    one = turn(model_api, cid, "u1")
    two = turn(model_api, cid, "u2")
    edited = turn(model_api, cid, "u2, edited", parent_message_id=one["assistant_message_id"])
    assert edited["user_message"]["parent_message_id"] == two["user_message"]["parent_message_id"]
    assert chat(sent_messages(upstream)[-1]) == [("user", "u1"), ("assistant", HELLO + "u1"), ("user", "u2, edited")]
    conv = model_api.get(f"/v1/conversations/{cid}").json()
    assert conv["head_id"] == edited["assistant_message_id"] and conv["leaf_count"] == 2
    assert_settled(model_server.database_url, cid)


def test_a_streamed_turn_announces_its_ids_before_the_first_token(model_api, model_server, upstream):
    cid = create(model_api)["id"]
    upstream.fail_next(Fault.endless())
    with model_api.stream("POST", f"/v1/conversations/{cid}/turns", json={"content": "go on", "stream": True}) as r:
        assert r.status_code == 200
        events = sse(r)
        name, started = next(events)
        assert name == "turn"
        assert started["conversation_id"] == cid and (started["provider"], started["model"]) == ("fake", "fake-large")
        # Ids chosen up front: the user message is already stored; the reply does not exist yet.
        assert model_api.get(f"/v1/conversations/{cid}/messages/{started['user_message_id']}").status_code == 200
        assert model_api.get(f"/v1/conversations/{cid}/messages/{started['assistant_message_id']}").status_code == 404
        assert next(events) == ("delta", {"text": " tick"})
    wait_for(lambda: model_api.get(f"/v1/conversations/{cid}").json()["head_id"] == started["assistant_message_id"])
    assert_settled(model_server.database_url, cid)


def test_a_streamed_turn_ends_with_the_stored_reply(model_api, model_server, upstream):
    cid = create(model_api)["id"]
    with model_api.stream("POST", f"/v1/conversations/{cid}/turns", json={"content": "hi you", "stream": True}) as r:
        events = list(sse(r))
    names = [name for name, _ in events]
    assert names[0] == "turn" and names[-1] == "done" and set(names[1:-1]) == {"delta"}
    done = events[-1][1]
    assert done["id"] == events[0][1]["assistant_message_id"]
    assert "".join(data["text"] for name, data in events if name == "delta") == done["content"] == HELLO + "hi you"
    assert model_api.get(f"/v1/conversations/{cid}/messages/{done['id']}").json() == done
    assert_settled(model_server.database_url, cid)


def test_a_retry_with_the_same_client_id_returns_the_turn_without_asking_the_model_again(model_api, upstream):
    cid = create(model_api)["id"]
    body = {"content": "only once", "id": str(uuid.uuid4())}
    first = turn(model_api, cid, **body)
    r = model_api.post(f"/v1/conversations/{cid}/turns", json=body)
    assert r.status_code == 200 and r.headers["idempotent-replayed"] == "true"
    assert r.json() == first
    assert len(sent_messages(upstream)) == 1
    assert model_api.get(f"/v1/conversations/{cid}").json()["message_count"] == 2
    # The same id with other content is a different message: refused.
    problem(
        model_api.post(f"/v1/conversations/{cid}/turns", json={**body, "content": "other"}), 409, "message-id-conflict"
    )


def test_an_idempotency_key_makes_a_retry_safe_and_refuses_a_different_request(model_api, upstream):
    cid = create(model_api)["id"]
    headers = {"Idempotency-Key": f"turn-{uuid.uuid4()}"}
    first = model_api.post(f"/v1/conversations/{cid}/turns", json={"content": "hi"}, headers=headers)
    assert first.status_code == 201
    again = model_api.post(f"/v1/conversations/{cid}/turns", json={"content": "hi"}, headers=headers)
    # The original outcome, status included, as for every write retried with its key.
    assert again.status_code == 201 and again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert len(sent_messages(upstream)) == 1
    other = model_api.post(f"/v1/conversations/{cid}/turns", json={"content": "bye"}, headers=headers)
    problem(other, 422, "idempotency-key-reused")


def test_a_retry_after_a_failed_turn_tries_the_reply_again_without_a_second_user_message(
    model_api, model_server, upstream
):
    cid = create(model_api)["id"]
    upstream.fail_next(Fault.status_code(500))
    body = {"content": "try me", "id": str(uuid.uuid4())}
    problem(model_api.post(f"/v1/conversations/{cid}/turns", json=body), 502, "upstream-unavailable")
    result = turn(model_api, cid, **body)
    assert result["user_message_id"] == body["id"]
    assert result["assistant_message"]["content"] == HELLO + "try me"
    assert model_api.get(f"/v1/conversations/{cid}").json()["message_count"] == 2
    assert_settled(model_server.database_url, cid)


def test_the_ollama_protocol_provider_takes_turns_too(model_api, upstream):
    cid = create(model_api)["id"]
    result = turn(model_api, cid, "hi", provider="fakeollama")
    assert result["assistant_message"]["content"] == "Hello from fake-small. You said: hi"
    assert result["assistant_message"]["generation"]["provider"] == "fakeollama"
    assert [r.path for r in upstream.requests] == ["/api/chat"]


def test_the_echo_provider_works_offline(model_api, model_server, upstream):
    cid = create(model_api)["id"]
    result = turn(model_api, cid, "hello offline world", provider="echo")
    reply = result["assistant_message"]
    assert reply["content"] == "echo: hello offline world"
    assert (reply["generation"]["provider"], reply["generation"]["model"]) == ("echo", "echo")
    assert upstream.requests == []
    assert_settled(model_server.database_url, cid)


def test_a_streamed_retry_of_a_finished_turn_replays_its_events_from_the_log(model_api, upstream):
    cid = create(model_api)["id"]
    body = {"content": "once", "id": str(uuid.uuid4()), "stream": True}
    with model_api.stream("POST", f"/v1/conversations/{cid}/turns", json=body) as r:
        first = list(sse(r))
    with model_api.stream("POST", f"/v1/conversations/{cid}/turns", json=body) as r:
        assert r.headers["idempotent-replayed"] == "true"
        again = list(sse(r))
    # The turn's ids, the stored reply's text in one delta, then the stored reply.
    assert again == [first[0], ("delta", {"text": first[-1][1]["content"]}), first[-1]]
    assert len(sent_messages(upstream)) == 1


def test_turns_reuse_the_connection_to_the_model_server(model_api, upstream):
    cid = create(model_api)["id"]
    for provider in ("fake", "fakeollama"):
        for n in range(3):
            turn(model_api, cid, f"turn {n}", provider=provider)
    openai_clients = {r.client for r in upstream.requests if r.path == "/v1/chat/completions"}
    ollama_clients = {r.client for r in upstream.requests if r.path == "/api/chat"}
    # One connection each, kept open between replies: no new TCP (and, in production, TLS) handshake per turn.
    assert len(openai_clients) == 1 and len(ollama_clients) == 1
