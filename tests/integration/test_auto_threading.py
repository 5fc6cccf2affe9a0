"""Auto-threading on the OpenAI door, driven by the official `openai` client: a client that resends
its whole history gets one thread, with a conversation_id or (opted in by header or by its key)
without; only new messages are appended, an edited history branches once, and the ids come back in
headers."""

from __future__ import annotations

import asyncio
import re
import uuid

import asyncpg
import httpx
import openai

from service.app.keys import set_auto_thread
from service.store.events import Store
from tests.helpers import say
from tests.servers import model_api as api
from tests.servers import openai_alias_client as client
from tests.servers import run
from tests.turnkit import sent_messages

MODEL = "fake-large"
HELLO = "Hello from fake-large. You said: "


def set_default(database_url: str, tenant: str, on: bool) -> None:
    """The key's auto-threading default, set by the app's own use case (as `convtree keys auto-thread` does)."""

    async def go() -> int:
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
        assert pool is not None
        try:
            return await set_auto_thread(Store(pool), tenant, "test", on)
        finally:
            await pool.close()

    assert run(go()) == 1


def ask(client: openai.OpenAI, history: list[dict], headers: dict | None = None, **extra: object) -> tuple[list[dict], dict]:
    """One stateless call: the history and the question; returns the history with the reply, and
    the extension fields and headers of the answer."""
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=history, extra_body=extra or None, extra_headers=headers
    )
    completion = raw.parse()
    extra_fields = completion.model_extra or {}
    ids = {
        "conversation_id": extra_fields["conversation_id"],
        "message_id": extra_fields["message_id"],
        "header_conversation_id": raw.headers["Convtree-Conversation-Id"],
        "header_message_id": raw.headers["Convtree-Message-Id"],
    }
    reply = {"role": "assistant", "content": completion.choices[0].message.content}
    return [*history, reply], ids


def contents(api: httpx.Client, cid: str) -> list[tuple[str, str]]:
    tree = api.get(f"/v1/conversations/{cid}/tree").json()
    return [(m["role"], m["content"]) for m in tree["messages"]]


def pairs(history: list[dict]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in history]


def test_the_ids_come_back_in_headers_as_in_the_body(client):
    _, ids = ask(client, [{"role": "user", "content": "where am I stored"}])
    assert ids["header_conversation_id"] == ids["conversation_id"]
    assert ids["header_message_id"] == ids["message_id"]


def test_a_history_resent_with_its_conversation_id_is_not_appended_again(client, api, upstream):
    history, first = ask(client, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "one"}])
    cid = first["conversation_id"]
    history, second = ask(client, [*history, {"role": "user", "content": "two"}], conversation_id=cid)
    assert second["conversation_id"] == cid
    # Not [S, Q1, A1, S, Q1, A1, Q2, A2]:
    assert contents(api, cid) == pairs(history)
    assert pairs(sent_messages(upstream)[-1]) == pairs(history[:-1])
    conversation = api.get(f"/v1/conversations/{cid}").json()
    assert conversation["message_count"] == 5 and conversation["leaf_count"] == 1
    assert conversation["head_id"] == second["message_id"]


def test_only_new_messages_with_a_conversation_id_are_appended_under_the_head_as_before(client, api, upstream):
    history, first = ask(client, [{"role": "user", "content": "one"}])
    cid = first["conversation_id"]
    _, second = ask(client, [{"role": "user", "content": "two"}], conversation_id=cid)
    assert contents(api, cid) == [*pairs(history), ("user", "two"), ("assistant", HELLO + "two")]
    assert pairs(sent_messages(upstream)[-1]) == [*pairs(history), ("user", "two")]
    # A conversation made by the native API, continued with new messages only:
    native = api.post("/v1/conversations", json={"system": "rules"}).json()["id"]
    _, third = ask(client, [{"role": "user", "content": "hi"}], conversation_id=native)
    assert contents(api, native) == [("system", "rules"), ("user", "hi"), ("assistant", HELLO + "hi")]


def test_a_resent_history_that_differs_at_message_k_branches_from_message_k_minus_1(client, api):
    history, first = ask(client, [{"role": "user", "content": "one"}])
    cid = first["conversation_id"]
    history, _ = ask(client, [*history, {"role": "user", "content": "two"}], conversation_id=cid)
    edited = [*history[:2], {"role": "user", "content": "two, edited"}]
    _, branch = ask(client, edited, conversation_id=cid)
    tree = api.get(f"/v1/conversations/{cid}/tree").json()
    by_id = {m["id"]: m for m in tree["messages"]}
    assert len(tree["messages"]) == 6 and api.get(f"/v1/conversations/{cid}").json()["leaf_count"] == 2
    question = by_id[by_id[branch["message_id"]]["parent_message_id"]]
    assert question["content"] == "two, edited"
    assert by_id[question["parent_message_id"]]["content"] == HELLO + "one"


def test_a_history_resent_whole_gets_another_reply_to_its_last_message(client, api):
    history, first = ask(client, [{"role": "user", "content": "again?"}])
    cid = first["conversation_id"]
    _, second = ask(client, history[:1], conversation_id=cid)
    tree = api.get(f"/v1/conversations/{cid}/tree").json()
    assert [m["role"] for m in tree["messages"]] == ["user", "assistant", "assistant"]
    assert tree["head_id"] == second["message_id"] != first["message_id"]


def test_the_opt_in_header_continues_the_conversation_a_resent_history_matches(client, api):
    on = {"Convtree-Auto-Thread": "on"}
    history, first = ask(client, [{"role": "system", "content": "s"}, {"role": "user", "content": "q1"}], on)
    history, second = ask(client, [*history, {"role": "user", "content": "q2"}], on)
    assert second["conversation_id"] == first["conversation_id"]
    assert contents(api, first["conversation_id"]) == pairs(history)
    # Without the header (the key's default is off), the same history makes a conversation of its own:
    _, apart = ask(client, [*history, {"role": "user", "content": "q3"}])
    assert apart["conversation_id"] != first["conversation_id"]
    # A history no stored path starts with: a new conversation.
    _, other = ask(client, [{"role": "user", "content": "unrelated"}], on)
    assert other["conversation_id"] not in (first["conversation_id"], apart["conversation_id"])
    bad = api.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]},
        headers={"Convtree-Auto-Thread": "maybe"},
    )
    assert bad.status_code == 422


def test_auto_threading_is_a_per_key_default_the_header_overrides(model_server, upstream):
    tenant, key = model_server.new_key()
    set_default(model_server.database_url, tenant, True)
    with openai.OpenAI(base_url=model_server.base_url + "/v1", api_key=key, max_retries=0) as client:
        history, first = ask(client, [{"role": "user", "content": "keyed one"}])
        history, second = ask(client, [*history, {"role": "user", "content": "keyed two"}])
        assert second["conversation_id"] == first["conversation_id"]
        _, off = ask(client, [*history, {"role": "user", "content": "keyed three"}], {"Convtree-Auto-Thread": "off"})
        assert off["conversation_id"] != first["conversation_id"]
    tenant, key = model_server.new_key()
    set_default(model_server.database_url, tenant, False)
    with openai.OpenAI(base_url=model_server.base_url + "/v1", api_key=key, max_retries=0) as client:
        history, first = ask(client, [{"role": "user", "content": "plain one"}])
        _, second = ask(client, [*history, {"role": "user", "content": "plain two"}])
        assert second["conversation_id"] != first["conversation_id"]


def test_matching_is_per_tenant(model_server, upstream):
    on = {"Convtree-Auto-Thread": "on"}
    history = [{"role": "user", "content": f"shared {uuid.uuid4()}"}]
    found = []
    for _ in range(2):
        _, key = model_server.new_key()
        with openai.OpenAI(base_url=model_server.base_url + "/v1", api_key=key, max_retries=0) as client:
            with_reply, first = ask(client, history, on)
            _, second = ask(client, [*with_reply, {"role": "user", "content": "more"}], on)
            assert second["conversation_id"] == first["conversation_id"]
            found.append(first["conversation_id"])
    assert found[0] != found[1]


def test_an_edit_at_turn_5_of_an_auto_threaded_history_is_one_branch(client, api):
    on = {"Convtree-Auto-Thread": "on"}
    history: list[dict] = []
    cids = set()
    for turn in range(1, 7):
        history, ids = ask(client, [*history, {"role": "user", "content": f"edit test turn {turn}"}], on)
        cids.add(ids["conversation_id"])
    (cid,) = cids
    edited = [*history[:8], {"role": "user", "content": "edit test turn 5, edited"}]
    edited, ids = ask(client, edited, on)
    assert ids["conversation_id"] == cid
    # And the edited thread goes on as a thread of its own, still in the same conversation:
    _, ids = ask(client, [*edited, {"role": "user", "content": "after the edit"}], on)
    assert ids["conversation_id"] == cid
    tree = api.get(f"/v1/conversations/{cid}/tree").json()
    assert len(tree["messages"]) == 12 + 4 and api.get(f"/v1/conversations/{cid}").json()["leaf_count"] == 2
    path = api.get(f"/v1/conversations/{cid}/context").json()["messages"]
    assert [m["content"] for m in path][:-1] == [m["content"] for m in edited] + ["after the edit"]


def test_an_erased_message_is_no_longer_matched(client, api):
    on = {"Convtree-Auto-Thread": "on"}
    history, first = ask(client, [{"role": "user", "content": "erase me"}], on)
    cid = first["conversation_id"]
    root = api.get(f"/v1/conversations/{cid}/tree").json()["messages"][0]
    r = api.post(f"/v1/conversations/{cid}/messages/{root['id']}/redact", json={"reason": "asked", "erase": True})
    assert r.status_code in (200, 201), r.text
    _, again = ask(client, [*history, {"role": "user", "content": "still there?"}], on)
    assert again["conversation_id"] != cid


def test_a_message_appended_by_the_native_api_continues_the_path_auto_threading_finds(client, api):
    on = {"Convtree-Auto-Thread": "on"}
    history, first = ask(client, [{"role": "user", "content": "native then chat"}], on)
    cid = first["conversation_id"]
    say(api, cid, "appended natively")
    say(api, cid, "and answered", role="assistant")
    resent = [*history, {"role": "user", "content": "appended natively"}, {"role": "assistant", "content": "and answered"}]
    _, ids = ask(client, [*resent, {"role": "user", "content": "next"}], on)
    assert ids["conversation_id"] == cid
    assert api.get(f"/v1/conversations/{cid}").json()["message_count"] == 6


CLIENTS = 100
TURNS = 20


def test_stateless_clients_resending_their_history_get_one_conversation_each(model_server, upstream):
    """100 clients × 20 turns, each resending its whole history, concurrently: exactly 100
    conversations of 40 messages, each the client's history once."""
    tenant, key = model_server.new_key()
    set_default(model_server.database_url, tenant, True)

    async def one(client: openai.AsyncOpenAI, n: int) -> tuple[set[str], list[dict]]:
        history: list[dict] = []
        cids: set[str] = set()
        for turn in range(TURNS):
            history.append({"role": "user", "content": f"client {n} turn {turn}"})
            completion = await client.chat.completions.create(model="echo", messages=history)
            cids.add((completion.model_extra or {})["conversation_id"])
            history.append({"role": "assistant", "content": completion.choices[0].message.content})
        return cids, history

    async def clients() -> list[tuple[set[str], list[dict]]]:
        # The SDK's own retries, as a real client has them: 100 clients at once may find the pool busy
        # (503 with Retry-After) on a loaded machine, and a retried history must still not be doubled.
        async with openai.AsyncOpenAI(
            base_url=model_server.base_url + "/v1", api_key=key, max_retries=5, timeout=120
        ) as client:
            return await asyncio.gather(*(one(client, n) for n in range(CLIENTS)))

    results = asyncio.run(clients())
    assert all(len(cids) == 1 for cids, _ in results)
    by_client = {next(iter(cids)): history for cids, history in results}
    assert len(by_client) == CLIENTS

    async def stored() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(model_server.database_url)
        try:
            return await conn.fetch(
                "SELECT conversation_id, message_count, leaf_count FROM conversations WHERE tenant = $1", tenant
            )
        finally:
            await conn.close()

    rows = run(stored())
    assert len(rows) == CLIENTS
    assert {str(r["conversation_id"]) for r in rows} == set(by_client)
    assert {(r["message_count"], r["leaf_count"]) for r in rows} == {(2 * TURNS, 1)}
    with model_server.client(key) as api:
        for cid, history in list(by_client.items())[:10]:
            assert contents(api, cid) == pairs(history)


def test_the_readme_example_runs(model_server, model_key):
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Auto-threading", 1)[1].split("\n## ", 1)[0]
    (example,) = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    example = example.replace("http://127.0.0.1:8000/v1", model_server.base_url + "/v1")
    exec(compile(example, "README.md", "exec"), {"KEY": model_key[1]})
