"""convtree.agents.ConvtreeSession, the Agents SDK's Session over the native API, against the real
server: the SDK's session contract (add, get, get the latest N, pop, clear), a function-call round
trip, retries that write nothing twice, forks and branches, and the SDK's Runner using it."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from agents import Agent, OpenAIChatCompletionsModel, RunConfig, Runner
from agents.memory import Session, SessionSettings
from openai import AsyncOpenAI

from convtree.agents import ConvtreeSession
from convtree.client import AsyncClient, Retry, TransportError

FAST = Retry(attempts=4, backoff=0.01, max_wait=0.5)
RUN = [
    {"role": "user", "content": "What is the weather in Oslo and Bergen?"},
    {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "ask the tool twice"}]},
    {"type": "function_call", "id": "fc_1", "call_id": "call_oslo", "name": "weather", "arguments": '{"city":"Oslo"}'},
    {"type": "function_call", "id": "fc_2", "call_id": "call_bergen", "name": "weather", "arguments": '{"city":"Bergen"}'},
    {"type": "function_call_output", "call_id": "call_oslo", "output": "-3 C, snow"},
    {"type": "function_call_output", "call_id": "call_bergen", "output": "4 C, rain"},
    {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
     "content": [{"type": "output_text", "text": "Snow in Oslo, rain in Bergen.", "annotations": []}]},
]  # fmt: skip


class LosesAnswers(httpx.AsyncBaseTransport):
    """Forwards requests, but loses the answers to the message appends numbered in `lose` (0: the
    first sent, retries counted) after the server handled them, as a dropped connection would."""

    def __init__(self, *lose: int) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.lose = set(lose)
        self.keys: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method == "POST" and request.url.path.endswith("/messages"):
            self.keys.append(request.headers["Idempotency-Key"])
            if len(self.keys) - 1 in self.lose:
                await response.aread()
                await response.aclose()
                raise httpx.ReadError("connection lost", request=request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def kept(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k not in ("id", "status")}


def run(server: Any, steps: Callable[[AsyncClient], Awaitable[Any]], transport: httpx.AsyncBaseTransport | None = None) -> Any:
    key = server.new_key()[1]

    async def scenario() -> Any:
        async with AsyncClient(server.base_url, key, retry=FAST, transport=transport) as ct:
            return await steps(ct)

    return asyncio.run(scenario())


def test_a_session_adds_gets_pops_and_clears_items_as_the_sdk_expects(server: Any) -> None:
    async def steps(ct: AsyncClient) -> Any:
        session = ConvtreeSession(client=ct)
        assert isinstance(session, Session)
        assert await session.get_items() == [] and await session.pop_item() is None  # nothing written yet
        await session.add_items(RUN[:1])
        await session.add_items(RUN[1:])
        everything = await session.get_items()
        latest = await session.get_items(limit=2)
        popped = await session.pop_item()
        after_pop = await session.get_items()
        await session.add_items([{"role": "assistant", "content": "Cold and wet."}])
        corrected = await session.get_items()
        tree = await ct.tree(session.conversation_id)
        first_id = session.session_id
        await session.clear_session()
        cleared = await session.get_items()
        await session.add_items([{"role": "user", "content": "new start"}])
        return everything, latest, popped, after_pop, corrected, tree, first_id, session, cleared, await session.get_items()

    everything, latest, popped, after_pop, corrected, tree, first_id, session, cleared, restarted = run(server, steps)
    assert [item["type"] for item in everything] == [
        "message", "reasoning", "function_call", "function_call", "function_call_output", "function_call_output", "message",
    ]  # fmt: skip
    assert kept(everything[0]) == {"type": "message", "role": "user",
                                   "content": [{"type": "input_text", "text": "What is the weather in Oslo and Bergen?"}]}  # fmt: skip
    assert [kept(item) for item in everything[1:]] == [kept(item) for item in RUN[1:]]
    assert len({item["id"] for item in everything}) == len(everything)
    assert latest == everything[-2:]
    assert popped == everything[-1]
    assert after_pop == everything[:-1]
    assert corrected[:-1] == everything[:-1]
    assert corrected[-1]["content"] == [{"type": "output_text", "text": "Cold and wet.", "annotations": []}]
    # One model step is one message: user, the step (reasoning + two calls), two results, two answers.
    assert [m.role for m in tree.messages] == ["user", "assistant", "tool", "tool", "assistant", "assistant"]
    assert [c["id"] for c in tree.messages[1].tool_calls] == ["call_oslo", "call_bergen"]
    # Cleared: a new conversation; the old one keeps everything, the popped answer as a branch.
    assert cleared == [] and session.session_id != first_id
    assert [kept(item) for item in restarted] == [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "new start"}]}
    ]


def test_get_items_honours_the_session_settings_limit(server: Any) -> None:
    async def steps(ct: AsyncClient) -> Any:
        session = ConvtreeSession(client=ct, session_settings=SessionSettings(limit=3))
        await session.add_items(RUN)
        return await session.get_items(), await session.get_items(limit=5), await session.get_items(limit=0)

    three, five, none = run(server, steps)
    assert [item["type"] for item in three] == ["function_call_output", "function_call_output", "message"]
    assert [item["type"] for item in five] == ["function_call", "function_call", *[i["type"] for i in three]]
    assert none == []


def test_popping_a_call_of_a_step_keeps_the_rest_of_the_step_as_the_head(server: Any) -> None:
    async def steps(ct: AsyncClient) -> Any:
        session = ConvtreeSession(client=ct)
        await session.add_items(RUN[:4])  # user, then reasoning + two calls: one assistant message
        before = await session.get_items()
        popped = await session.pop_item()
        after = await session.get_items()
        return before, popped, after, await ct.tree(session.conversation_id)

    before, popped, after, tree = run(server, steps)
    assert kept(popped) == kept(RUN[3])
    assert [kept(item) for item in after] == [kept(item) for item in before[:-1]]
    assert len(tree.messages) == 3  # the step stays whole, a branch beside the step without its last call
    assert [len(m.tool_calls or []) for m in tree.messages[1:]] == [2, 1]


def test_a_function_call_round_trip_reads_back_through_the_native_context(server: Any) -> None:
    async def steps(ct: AsyncClient) -> Any:
        session = ConvtreeSession(client=ct)
        await session.add_items(RUN)
        context = await ct.context(session.conversation_id)
        again = ConvtreeSession(session.session_id, client=ct)  # another process, the same session
        return context, await again.get_items(), await session.get_items()

    context, read_elsewhere, read_here = run(server, steps)
    results = [(m.role, m.tool_call_id, m.content) for m in context.messages if m.role == "tool"]
    assert results == [("tool", "call_oslo", "-3 C, snow"), ("tool", "call_bergen", "4 C, rain")]
    assert read_elsewhere == read_here


def test_add_items_retried_with_its_key_writes_nothing_twice(server: Any) -> None:
    async def steps(ct: AsyncClient) -> Any:
        session = ConvtreeSession(client=ct)
        await session.add_items(RUN[:1])
        await session.add_items(RUN[1:], idempotency_key="turn-1")
        await session.add_items(RUN[1:], idempotency_key="turn-1")  # the caller retries the whole call
        return await session.get_items(), await ct.tree(session.conversation_id)

    items, tree = run(server, steps)
    assert [kept(item) for item in items[1:]] == [kept(item) for item in RUN[1:]]
    assert len(tree.messages) == 5


def test_an_answer_lost_on_the_way_is_retried_without_a_second_message(server: Any) -> None:
    transport = LosesAnswers(0, 1)

    async def steps(ct: AsyncClient) -> Any:
        session = ConvtreeSession(client=ct)
        await session.add_items(RUN)
        return await session.get_items(), await ct.tree(session.conversation_id)

    items, tree = run(server, steps, transport)
    assert [kept(item) for item in items[1:]] == [kept(item) for item in RUN[1:]]
    assert len(tree.messages) == 5
    assert transport.keys[0] == transport.keys[1]  # the lost append was sent again with its key


def test_a_call_that_failed_after_its_last_append_is_completed_by_its_retry(server: Any) -> None:
    # Appends 0 (the user), 1-3 (step, results) pass; the answer to 4 (the last) is lost on every try.
    transport = LosesAnswers(*range(4, 4 + FAST.attempts))

    async def steps(ct: AsyncClient) -> Any:
        session = ConvtreeSession(client=ct)
        await session.add_items(RUN[:1])
        with pytest.raises(TransportError):
            await session.add_items(RUN[1:], idempotency_key="turn-1")
        rolled_back = await session.get_items()
        await session.add_items(RUN[1:], idempotency_key="turn-1")
        return rolled_back, await session.get_items(), await ct.tree(session.conversation_id)

    rolled_back, items, tree = run(server, steps, transport)
    assert [kept(item) for item in rolled_back] == [kept(item) for item in items[:1]]
    assert [kept(item) for item in items[1:]] == [kept(item) for item in RUN[1:]]
    assert len(tree.messages) == 5


def test_an_add_items_that_fails_midway_leaves_the_head_path_as_it_was(server: Any) -> None:
    async def steps(ct: AsyncClient) -> Any:
        session = ConvtreeSession(client=ct)
        await session.add_items(RUN[:1])
        before = await session.get_items()
        # The second result answers no call: the server refuses it after the step and the first result.
        broken = [*RUN[1:5], {"type": "function_call_output", "call_id": "call_nowhere", "output": "?"}]
        with pytest.raises(Exception) as refused:
            await session.add_items(broken)
        return before, await session.get_items(), refused.value

    before, after, refused = run(server, steps)
    assert getattr(refused, "slug", None) == "tool-result-without-call"
    assert after == before


def test_a_fork_continues_apart_from_its_source(server: Any) -> None:
    async def steps(ct: AsyncClient) -> Any:
        session = ConvtreeSession(client=ct)
        await session.add_items(RUN)
        items = await session.get_items()
        # Fork at the second tool result: the history up to it, then another answer.
        fork = await session.fork(at_item=items[5]["id"])
        await fork.add_items([{"role": "assistant", "content": "Pack for both."}])
        await session.add_items([{"role": "user", "content": "And tomorrow?"}])
        return items, await session.get_items(), await fork.get_items(), fork, session

    items, source, forked, fork, session = run(server, steps)
    assert fork.session_id != session.session_id
    assert source[:-1] == items and source[-1]["content"] == [{"type": "input_text", "text": "And tomorrow?"}]
    assert forked[:6] == items[:6]
    assert forked[6]["content"] == [{"type": "output_text", "text": "Pack for both.", "annotations": []}]
    assert len(forked) == 7


def test_branches_list_the_tips_and_switch_continues_one(server: Any) -> None:
    async def steps(ct: AsyncClient) -> Any:
        session = ConvtreeSession(client=ct)
        await session.add_items([{"role": "user", "content": "Name a colour"}, {"role": "assistant", "content": "Red"}])
        first = await session.pop_item()
        await session.add_items([{"role": "assistant", "content": "Blue"}])
        tips = await session.branches()
        red = next(b for b in tips if not b.is_head)
        await session.switch(red.leaf_id)
        on_red = await session.get_items()
        await session.switch(first["id"])  # an item id names its message too
        return tips, on_red, await session.get_items()

    tips, on_red, again = run(server, steps)
    assert len(tips) == 2 and sum(b.is_head for b in tips) == 1
    assert on_red[-1]["content"][0]["text"] == "Red"
    assert again == on_red


def test_the_runner_keeps_two_turns_in_the_session(server: Any) -> None:
    """`Runner.run` with the session, the model being convtree's echo provider through its Chat
    Completions door: the second turn's model call is sent the first turn from the session."""
    key = server.new_key()[1]

    async def scenario() -> Any:
        openai = AsyncOpenAI(base_url=server.base_url + "/openai/v1", api_key=key, max_retries=0)
        agent = Agent(name="echo", instructions="Repeat.", model=OpenAIChatCompletionsModel(model="echo", openai_client=openai))
        config = RunConfig(tracing_disabled=True)
        async with AsyncClient(server.base_url, key, retry=FAST) as ct:
            session = ConvtreeSession(client=ct)
            first = await Runner.run(agent, "hello", session=session, run_config=config)
            second = await Runner.run(agent, "and again", session=session, run_config=config)
            items = await session.get_items()
            # What the model was sent the second time: the chat door stored it as its own conversation.
            page = await ct.list_conversations(limit=1)
            sent = await ct.context(page.items[0].id)
        await openai.close()
        return first.final_output, second.final_output, items, sent

    first, second, items, sent = asyncio.run(scenario())
    assert (first, second) == ("echo: hello", "echo: and again")
    assert [(item["role"], item["content"][0]["text"]) for item in items] == [
        ("user", "hello"), ("assistant", "echo: hello"), ("user", "and again"), ("assistant", "echo: and again"),
    ]  # fmt: skip
    # (the SDK sends a user's text as one text part, the assistant's as a string)
    said = [(m.role, m.content if isinstance(m.content, str) else m.content[0]["text"]) for m in sent.messages]
    assert said == [
        ("system", "Repeat."), ("user", "hello"), ("assistant", "echo: hello"), ("user", "and again"),
        ("assistant", "echo: and again"),
    ]  # fmt: skip


def test_a_session_id_must_name_a_conversation() -> None:
    with pytest.raises(ValueError):
        ConvtreeSession("user-123", client=None)  # type: ignore[arg-type]
    assert ConvtreeSession(str(uuid.UUID(int=5)), client=None).session_id == str(uuid.UUID(int=5))  # type: ignore[arg-type]


def test_the_readme_example_runs(server: Any) -> None:
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text.split("## OpenAI Agents SDK sessions", 1)[1].split("\n## ", 1)[0]
    (example,) = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    env = {**os.environ, "CONVTREE_URL": server.base_url, "CONVTREE_KEY": server.new_key()[1]}
    result = subprocess.run([sys.executable, "-c", example], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["2 3", "[(1, False)]"]
