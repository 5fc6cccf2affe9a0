"""convtree.client.AsyncClient against the real server: the same calls, awaited."""

import asyncio
import uuid

import httpx
import pytest

from convtree.client import AsyncClient, Delta, Done, NotFound, Retry, TurnStarted

FAST = Retry(attempts=4, backoff=0.01, max_wait=0.5)


class LosesFirstAnswer(httpx.AsyncBaseTransport):
    """Forwards requests, but loses the answer to the first POST after the server handled it."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.lost = False
        self.keys: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method == "POST":
            self.keys.append(request.headers["Idempotency-Key"])
            if not self.lost:
                self.lost = True
                await response.aread()
                await response.aclose()
                raise httpx.ReadError("connection lost", request=request)
        return response


def test_the_async_client_writes_reads_pages_and_streams(server):
    key = server.new_key()[1]

    async def scenario() -> None:
        async with AsyncClient(server.base_url, key, retry=FAST) as ct:
            conversation = await ct.create_conversation(title="Async", system="s")
            first = await ct.append(conversation.id, "hello")
            assert (await ct.message(conversation.id, first.id)).content == "hello"
            assert len((await ct.tree(conversation.id)).messages) == 2
            assert [c.id async for c in ct.iter_conversations(limit=1)] == [conversation.id]
            assert len([e async for e in ct.iter_events(conversation.id, limit=1)]) == 3  # created, system, hello
            events = [e async for e in ct.stream_turn(conversation.id, "stream", provider="echo")]
            assert isinstance(events[0], TurnStarted) and isinstance(events[-1], Done)
            assert "".join(e.text for e in events if isinstance(e, Delta)) == "echo: stream"
            result = await ct.turn(conversation.id, "plain", provider="echo")
            assert result.assistant_message.content == "echo: plain"
            assert (await ct.audit(conversation.id)).valid
            with pytest.raises(NotFound) as caught:
                await ct.conversation(uuid.uuid4())
            assert caught.value.request_id

    asyncio.run(scenario())


def test_the_async_feed_follows_new_events(server):
    key = server.new_key()[1]

    async def scenario() -> None:
        async with AsyncClient(server.base_url, key, retry=FAST) as ct:
            conversation = await ct.create_conversation(title="Feed")
            after = (await ct.feed()).next_after
            follower = ct.follow(after=after)
            waiting = asyncio.ensure_future(follower.__anext__())
            await ct.append(conversation.id, "news")
            event = await asyncio.wait_for(waiting, 20)
            assert event.type == "message_appended" and event.seq > after
            await follower.aclose()

    asyncio.run(scenario())


def test_an_async_write_whose_answer_was_lost_is_written_once(server):
    key = server.new_key()[1]
    transport = LosesFirstAnswer()

    async def scenario() -> None:
        async with AsyncClient(server.base_url, key, retry=FAST, transport=transport) as ct:
            conversation = await ct.create_conversation(title="Once")
            assert [c.id async for c in ct.iter_conversations()] == [conversation.id]

    asyncio.run(scenario())
    assert len(transport.keys) == 2 and transport.keys[0] == transport.keys[1]
