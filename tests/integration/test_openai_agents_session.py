"""The OpenAI Agents SDK's own `OpenAIConversationsSession`, pointed at convtree's /openai/v1 with no
other change: items added, read back (all, and the latest N), popped and cleared, as the SDK calls
the Conversations API. No model runs: a session only stores a run's items."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from agents.memory import OpenAIConversationsSession
from openai import AsyncOpenAI

RUN = [
    {"role": "user", "content": "What is the weather in Oslo?"},
    {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "ask the tool"}]},
    {"type": "function_call", "id": "fc_1", "call_id": "call_oslo", "name": "weather", "arguments": '{"city":"Oslo"}'},
    {"type": "function_call_output", "call_id": "call_oslo", "output": "-3 C, snow"},
    {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
     "content": [{"type": "output_text", "text": "Snowy, -3 C.", "annotations": []}]},
]


@pytest.fixture
def key(model_server) -> str:
    return model_server.new_key()[1]


def session_run(model_server, key, steps):
    async def run():
        client = AsyncOpenAI(base_url=model_server.base_url + "/openai/v1", api_key=key, max_retries=0)
        try:
            session = OpenAIConversationsSession(openai_client=client)
            return await steps(session)
        finally:
            await client.close()

    return asyncio.run(run())


def kept(item: dict) -> dict:
    return {k: v for k, v in item.items() if k not in ("id", "status")}


def test_a_session_adds_gets_pops_and_clears_items(model_server, key):
    async def steps(session):
        await session.add_items(RUN)
        everything = await session.get_items()
        latest = await session.get_items(limit=2)
        popped = await session.pop_item()
        after_pop = await session.get_items()
        await session.add_items([{"type": "message", "role": "assistant", "content": "Cold and snowy."}])
        after_correction = await session.get_items()
        conversation_id = session.session_id
        await session.clear_session()
        return everything, latest, popped, after_pop, after_correction, conversation_id

    everything, latest, popped, after_pop, after_correction, conversation_id = session_run(model_server, key, steps)
    assert [item["type"] for item in everything] == ["message", "reasoning", "function_call", "function_call_output", "message"]
    assert kept(everything[0]) == {"type": "message", "role": "user",
                                   "content": [{"type": "input_text", "text": "What is the weather in Oslo?"}]}
    assert [kept(item) for item in everything[1:]] == [
        {k: v for k, v in item.items() if k not in ("id", "status")} for item in RUN[1:]
    ]
    assert latest == everything[-2:]
    assert popped == everything[-1]
    assert after_pop == everything[:-1]
    assert after_correction[:-1] == everything[:-1]
    assert after_correction[-1]["content"] == [{"type": "output_text", "text": "Cold and snowy.", "annotations": []}]

    # Cleared: the Conversations API no longer has it; convtree's log keeps the whole history,
    # the popped answer as a branch beside the correction.
    with httpx.Client(base_url=model_server.base_url, headers={"Authorization": f"Bearer {key}"}) as api:
        assert api.get(f"/openai/v1/conversations/{conversation_id}").status_code == 404
        native = str(uuid.UUID(hex=conversation_id.removeprefix("conv_")))
        tree = api.get(f"/v1/conversations/{native}/tree").json()
        answers = [m["content"] for m in tree["messages"] if m["role"] == "assistant" and m.get("tool_calls") is None]
        assert answers == ["Snowy, -3 C.", "Cold and snowy."]


def test_a_fresh_session_starts_an_empty_conversation(model_server, key):
    async def steps(session):
        return await session.get_items(), await session.pop_item(), session.session_id

    items, popped, conversation_id = session_run(model_server, key, steps)
    assert items == [] and popped is None and conversation_id.startswith("conv_")
