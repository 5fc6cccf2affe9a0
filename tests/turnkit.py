"""Helpers for the turn tests: taking turns, reading server-sent events, and checking that every
turn ended with its reply or its failure."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx

from tests.postgres import fetch

# Tools as OpenAI's and Ollama's clients declare them: one with an argument, one without.
WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME = {"type": "function", "function": {"name": "time", "parameters": {"type": "object", "properties": {}}}}


def turn(api: httpx.Client, cid: str, content: str, status: int = 201, **body: Any) -> dict[str, Any]:
    r = api.post(f"/v1/conversations/{cid}/turns", json={"content": content, **body})
    assert r.status_code == status, r.text
    return r.json()


def sse(response: httpx.Response) -> Iterator[tuple[str, Any]]:
    """(event, decoded data) for each event of a text/event-stream response, as it arrives."""
    assert response.headers["content-type"].startswith("text/event-stream"), response.headers
    event, data = "message", []
    for line in response.iter_lines():
        if not line:
            if data:
                text = "\n".join(data)
                yield event, (text if text == "[DONE]" else json.loads(text))
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))


def positioned(response: httpx.Response) -> Iterator[tuple[str, int, Any]]:
    """(event, position, decoded data) for each event of a streamed turn, as it arrives: every
    event carries its position as `id:` (keep-alive comments carry nothing and are skipped)."""
    assert response.headers["content-type"].startswith("text/event-stream"), response.headers
    event, position, data = "message", None, []
    for line in response.iter_lines():
        if not line:
            if data:
                assert position is not None, f"an event without an id: {event} {data}"
                yield event, int(position), json.loads("\n".join(data))
            event, position, data = "message", None, []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("id:"):
            position = line[3:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))


def sent_messages(upstream: Any) -> list[list[dict[str, str]]]:
    """The messages of every chat request the fake model server received, in order."""
    return [r.body["messages"] for r in upstream.requests if r.method == "POST"]


def wait_for(probe: Any, timeout: float = 10.0) -> Any:
    """Poll `probe()` until it returns something truthy (work the server finishes after answering)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


def turn_failures(database_url: str, cid: str) -> list[dict[str, Any]]:
    rows = fetch(
        database_url,
        "SELECT payload::text AS payload FROM events WHERE conversation_id = $1 AND type = 'turn_failed' ORDER BY seq",
        uuid.UUID(cid),
    )
    return [json.loads(r["payload"]) for r in rows]


def assert_settled(database_url: str, cid: str) -> None:
    """Nothing left in progress, and every user message has a reply or a `turn_failed` naming it."""
    conversation = uuid.UUID(cid)
    assert fetch(database_url, "SELECT reply_id FROM pending_replies WHERE conversation_id = $1", conversation) == []
    orphans = fetch(
        database_url,
        """
        SELECT u.message_id FROM events u
         WHERE u.conversation_id = $1 AND u.type = 'message_appended' AND u.role = 'user'
           AND NOT EXISTS (SELECT 1 FROM events a
                            WHERE a.conversation_id = $1 AND a.parent_id = u.message_id AND a.role = 'assistant')
           AND NOT EXISTS (SELECT 1 FROM events f
                            WHERE f.conversation_id = $1 AND f.type = 'turn_failed'
                              AND (f.payload ->> 'user_message_id')::uuid = u.message_id)
        """,
        conversation,
    )
    assert orphans == [], orphans
