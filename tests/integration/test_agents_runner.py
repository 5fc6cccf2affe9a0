"""The OpenAI Agents SDK's `Runner` with its default model API, the Responses API, pointed at
convtree's /openai/v1 (`set_default_openai_client`), the model being the fake model server behind
convtree: two turns kept by `OpenAIConversationsSession`, by `ConvtreeSession`, and chained by
`previous_response_id`; `pop_item`; and a function tool the SDK runs between two model calls."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from agents import (
    Agent,
    ModelSettings,
    RunConfig,
    Runner,
    function_tool,
    set_default_openai_api,
    set_default_openai_client,
    set_tracing_disabled,
)
from agents.memory import OpenAIConversationsSession
from openai import AsyncOpenAI

from convtree.agents import ConvtreeSession
from convtree.client import AsyncClient, Retry
from tests.fakeupstream import Fault, FakeUpstream

FAST = Retry(attempts=4, backoff=0.01, max_wait=0.5)
MODEL = "fake-large"  # the model server's default provider is the fake one


def config() -> RunConfig:
    """A run's config; made per run, as its model provider keeps the client it first used."""
    return RunConfig(tracing_disabled=True)


@pytest.fixture(autouse=True)
def _no_tracing() -> Iterator[None]:
    set_tracing_disabled(True)
    set_default_openai_api("responses")
    yield


def chat_requests(upstream: FakeUpstream) -> list[dict[str, Any]]:
    return [r.body for r in upstream.requests if r.method == "POST"]


def said(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    def text(content: Any) -> str:
        if isinstance(content, list):
            return "".join(part.get("text", "") for part in content)
        return content or ""

    return [(m["role"], text(m.get("content"))) for m in messages]


def run(model_server: Any, steps: Callable[[AsyncOpenAI, str], Awaitable[Any]]) -> Any:
    """Runs `steps(client, key)` with the SDK's default client pointed at convtree."""
    key = model_server.new_key()[1]

    async def scenario() -> Any:
        client = AsyncOpenAI(base_url=model_server.base_url + "/openai/v1", api_key=key, max_retries=0)
        set_default_openai_client(client, use_for_tracing=False)
        try:
            return await steps(client, key)
        finally:
            await client.close()

    return asyncio.run(scenario())


def agent(**kwargs: Any) -> Agent[Any]:
    return Agent(name="guide", instructions="Be brief.", model=MODEL, **kwargs)


def test_two_turns_with_an_openai_conversations_session_then_pop_item(model_server, upstream):
    async def steps(client: AsyncOpenAI, key: str) -> Any:
        conversation = await client.conversations.create(metadata={"topic": "greetings"})
        session = OpenAIConversationsSession(conversation_id=conversation.id, openai_client=client)
        first = await Runner.run(agent(), "hello", session=session, run_config=config())
        second = await Runner.run(agent(), "and again", session=session, run_config=config())
        items = await session.get_items()
        popped = await session.pop_item()
        after = await session.get_items()
        return first, second, items, popped, after

    first, second, items, popped, after = run(model_server, steps)
    assert first.final_output == "Hello from fake-large. You said: hello"
    assert second.final_output == "Hello from fake-large. You said: and again"
    assert [r.model_dump()["type"] for r in second.raw_responses[0].output] == ["message"]
    # The second model call was sent the first turn, from the session, after the instructions.
    assert said(chat_requests(upstream)[-1]["messages"]) == [
        ("system", "Be brief."), ("user", "hello"), ("assistant", "Hello from fake-large. You said: hello"),
        ("user", "and again"),
    ]  # fmt: skip
    assert [(i["role"], i["content"][0]["text"]) for i in items] == [
        ("user", "hello"), ("assistant", "Hello from fake-large. You said: hello"),
        ("user", "and again"), ("assistant", "Hello from fake-large. You said: and again"),
    ]  # fmt: skip
    assert popped == items[-1] and after == items[:-1]


def test_two_turns_with_a_convtree_session_then_pop_item(model_server, upstream):
    async def steps(client: AsyncOpenAI, key: str) -> Any:
        async with AsyncClient(model_server.base_url, key, retry=FAST) as ct:
            session = ConvtreeSession(client=ct)
            first = await Runner.run(agent(), "hello", session=session, run_config=config())
            second = await Runner.run(agent(), "and again", session=session, run_config=config())
            items = await session.get_items()
            popped = await session.pop_item()
            after = await session.get_items()
            return first, second, items, popped, after

    first, second, items, popped, after = run(model_server, steps)
    assert first.final_output == "Hello from fake-large. You said: hello"
    assert second.final_output == "Hello from fake-large. You said: and again"
    assert said(chat_requests(upstream)[-1]["messages"]) == [
        ("system", "Be brief."), ("user", "hello"), ("assistant", "Hello from fake-large. You said: hello"),
        ("user", "and again"),
    ]  # fmt: skip
    assert [(i["role"], i["content"][0]["text"]) for i in items] == [
        ("user", "hello"), ("assistant", "Hello from fake-large. You said: hello"),
        ("user", "and again"), ("assistant", "Hello from fake-large. You said: and again"),
    ]  # fmt: skip
    assert popped == items[-1] and after == items[:-1]


def test_two_turns_chained_by_previous_response_id(model_server, upstream):
    async def steps(client: AsyncOpenAI, key: str) -> Any:
        first = await Runner.run(agent(), "hello", run_config=config())
        second = await Runner.run(agent(), "and again", previous_response_id=first.last_response_id, run_config=config())
        # A branch of the first: shown the first turn only, never the second.
        other = await Runner.run(agent(), "in French", previous_response_id=first.last_response_id, run_config=config())
        kept = await client.responses.retrieve(first.last_response_id)
        return first, second, other, kept

    first, second, other, kept = run(model_server, steps)
    assert first.last_response_id.startswith("resp_") and second.final_output.endswith("You said: and again")
    requests = chat_requests(upstream)
    turn_one = [("system", "Be brief."), ("user", "hello"), ("assistant", "Hello from fake-large. You said: hello")]
    assert said(requests[-2]["messages"]) == [*turn_one, ("user", "and again")]
    assert said(requests[-1]["messages"]) == [*turn_one, ("user", "in French")]
    assert kept.model_extra["next_response_ids"] == [second.last_response_id, other.last_response_id]


def test_auto_previous_response_id_chains_the_model_calls_of_a_tool_loop(model_server, upstream):
    ran: list[str] = []

    @function_tool
    def weather(city: str) -> str:
        """The weather in a city."""
        ran.append(city)
        return f"-3 C in {city}"

    upstream.fail_next(Fault.tool_calls(("weather", '{"city":"Oslo"}')), Fault.answer())

    async def steps(client: AsyncOpenAI, key: str) -> Any:
        result = await Runner.run(agent(tools=[weather]), "weather in Oslo?", auto_previous_response_id=True, run_config=config())
        return result, await client.responses.retrieve(result.last_response_id)

    result, last_response = run(model_server, steps)
    assert last_response.previous_response_id == result.raw_responses[0].response_id
    assert ran == ["Oslo"] and result.final_output == "Tool said: -3 C in Oslo"
    assert [r.response_id for r in result.raw_responses][0] != result.last_response_id
    # The second call sent only the tool's output; convtree put the path before it.
    last = chat_requests(upstream)[-1]["messages"]
    assert said(last)[:2] == [("system", "Be brief."), ("user", "weather in Oslo?")]
    assert last[-2]["tool_calls"][0]["function"] == {"name": "weather", "arguments": '{"city":"Oslo"}'}
    assert last[-1] == {"role": "tool", "tool_call_id": last[-2]["tool_calls"][0]["id"], "content": "-3 C in Oslo"}


def test_a_function_tool_round_trip_through_the_runner(model_server, upstream):
    """The fake model asks for the tool; the SDK runs the Python function and sends the whole run
    back (input, the call, its `function_call_output`), the Responses API answers it."""
    ran: list[str] = []

    @function_tool
    def weather(city: str) -> str:
        """The weather in a city."""
        ran.append(city)
        return f"-3 C in {city}"

    upstream.fail_next(Fault.tool_calls(("weather", '{"city":"Oslo"}')), Fault.answer())

    async def steps(client: AsyncOpenAI, key: str) -> Any:
        a = agent(tools=[weather], model_settings=ModelSettings(parallel_tool_calls=False))
        return await Runner.run(a, "weather in Oslo?", run_config=config())

    result = run(model_server, steps)
    assert ran == ["Oslo"] and result.final_output == "Tool said: -3 C in Oslo"
    [asked, answered] = result.raw_responses
    [call] = asked.output
    assert call.type == "function_call" and call.name == "weather"
    tool_request = chat_requests(upstream)[-2]
    assert tool_request["tools"][0]["function"]["name"] == "weather"
    last = chat_requests(upstream)[-1]["messages"]
    assert said(last)[:2] == [("system", "Be brief."), ("user", "weather in Oslo?")]
    assert last[-2]["tool_calls"][0] == {
        "type": "function", "id": call.call_id, "function": {"name": "weather", "arguments": '{"city":"Oslo"}'}
    }  # fmt: skip
    assert last[-1] == {"role": "tool", "tool_call_id": call.call_id, "content": "-3 C in Oslo"}


def test_two_turns_in_a_conversation_the_server_keeps(model_server, upstream):
    """`Runner.run(conversation_id=...)`: the SDK sends only each turn's new input with
    `conversation`; convtree appends input and output under the conversation's head."""

    async def steps(client: AsyncOpenAI, key: str) -> Any:
        conversation = await client.conversations.create()
        first = await Runner.run(agent(), "hello", conversation_id=conversation.id, run_config=config())
        second = await Runner.run(agent(), "and again", conversation_id=conversation.id, run_config=config())
        items = [item async for item in client.conversations.items.list(conversation.id, order="asc")]
        return first, second, items

    first, second, items = run(model_server, steps)
    assert second.final_output == "Hello from fake-large. You said: and again"
    assert said(chat_requests(upstream)[-1]["messages"]) == [
        ("system", "Be brief."), ("user", "hello"), ("assistant", "Hello from fake-large. You said: hello"),
        ("user", "and again"),
    ]  # fmt: skip
    assert [(i.role, i.content[0].text) for i in items] == [
        ("user", "hello"), ("assistant", "Hello from fake-large. You said: hello"),
        ("user", "and again"), ("assistant", "Hello from fake-large. You said: and again"),
    ]  # fmt: skip


def test_a_streamed_run_with_a_tool_round_trip(model_server, upstream):
    """`Runner.run_streamed`: the SDK reads convtree's Responses event stream for both model calls."""
    ran: list[str] = []

    @function_tool
    def weather(city: str) -> str:
        """The weather in a city."""
        ran.append(city)
        return f"-3 C in {city}"

    upstream.fail_next(Fault.tool_calls(("weather", '{"city":"Bergen"}')), Fault.answer())

    async def steps(client: AsyncOpenAI, key: str) -> Any:
        result = Runner.run_streamed(agent(tools=[weather]), "weather in Bergen?", run_config=config())
        kinds = [event.data.type async for event in result.stream_events() if event.type == "raw_response_event"]
        return result, kinds

    result, kinds = run(model_server, steps)
    assert ran == ["Bergen"] and result.final_output == "Tool said: -3 C in Bergen"
    assert kinds.count("response.completed") == 2 and "response.output_text.delta" in kinds
    assert "response.function_call_arguments.delta" in kinds
