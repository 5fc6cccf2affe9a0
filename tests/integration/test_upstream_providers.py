"""Behaviour every HTTP provider shares, proved against the real fake server for each kind."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Iterator

import pytest

from service.domain.errors import (
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamTooLarge,
    UpstreamUnavailable,
)
from service.upstream import (
    ChatMessage,
    ChatRequest,
    Finished,
    HttpSettings,
    OllamaProvider,
    OpenAIProvider,
    Provider,
    RetryPolicy,
    TextDelta,
)
from tests.fakeupstream import Fault, FakeUpstream

KEY = "sk-test-SECRET-4242"
FAST_RETRY = RetryPolicy(
    attempts=3, timeout=10.0, wait_initial=0.01, wait_max=0.05, wait_jitter=0.01, retry_after_max=5.0
)
REQUEST = ChatRequest(
    model="fake-large",
    messages=[ChatMessage("system", "Be brief."), ChatMessage("user", "what is two plus two")],
)
EXPECTED = "Hello from fake-large. You said: what is two plus two"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeUpstream) -> FakeUpstream:
    server.reset()
    return server


@pytest.fixture(params=["openai", "ollama"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


def make(
    kind: str, url: str, *, http: HttpSettings = HttpSettings(), retry: RetryPolicy = FAST_RETRY
) -> Provider:
    if kind == "openai":
        return OpenAIProvider("up", url, api_key=KEY, http=http, retry=retry)
    return OllamaProvider("up", url, api_key=KEY, http=http, retry=retry)  # key as for a proxy


def url_of(fake: FakeUpstream, kind: str) -> str:
    return fake.openai_url if kind == "openai" else fake.ollama_url


async def collect(provider: Provider, request: ChatRequest = REQUEST) -> tuple[str, Finished]:
    items = [item async for item in provider.stream(request)]
    assert all(isinstance(i, TextDelta) for i in items[:-1])
    assert isinstance(items[-1], Finished)
    return "".join(i.text for i in items[:-1]), items[-1]


def run_stream(kind: str, fake: FakeUpstream, **kw: object) -> tuple[str, Finished]:
    async def go() -> tuple[str, Finished]:
        provider = make(kind, url_of(fake, kind), **kw)  # type: ignore[arg-type]
        try:
            return await collect(provider)
        finally:
            await provider.aclose()

    return asyncio.run(go())


def chat_requests(fake: FakeUpstream) -> list[object]:
    return [r for r in fake.requests if r.method == "POST"]


def test_stream_assembles_text_and_reports_usage(fake: FakeUpstream, kind: str) -> None:
    text, finished = run_stream(kind, fake)
    assert text == EXPECTED
    assert finished.finish_reason == "stop"
    assert finished.model == "fake-large"
    assert finished.prompt_tokens == 7  # words of both messages, as the fake counts them
    assert finished.completion_tokens == len(EXPECTED.split())


def test_upstream_sees_exactly_the_messages_sent(fake: FakeUpstream, kind: str) -> None:
    run_stream(kind, fake)
    [sent] = chat_requests(fake)
    assert sent.body["messages"] == [  # type: ignore[attr-defined]
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "what is two plus two"},
    ]
    assert sent.body["stream"] is True  # type: ignore[attr-defined]


def test_429_with_retry_after_is_waited_for_then_retried(fake: FakeUpstream, kind: str) -> None:
    fake.fail_next(Fault.status_code(429, retry_after="1", message="slow down"))
    started = time.monotonic()
    text, _ = run_stream(kind, fake)
    assert text == EXPECTED
    assert time.monotonic() - started >= 0.9  # Retry-After honoured, not the 10 ms backoff
    assert len(chat_requests(fake)) == 2


def test_retry_after_beyond_the_cap_fails_fast_as_rate_limited(fake: FakeUpstream, kind: str) -> None:
    fake.fail_next(Fault.status_code(429, retry_after="120", message="quota exceeded"))
    with pytest.raises(UpstreamRateLimited) as caught:
        run_stream(kind, fake)
    assert caught.value.context["retry_after"] == 120.0
    assert caught.value.context["provider"] == "up"
    assert "quota exceeded" in caught.value.detail
    assert len(chat_requests(fake)) == 1


def test_429_on_every_attempt_becomes_rate_limited(fake: FakeUpstream, kind: str) -> None:
    fake.fail_next(*[Fault.status_code(429)] * 3)
    with pytest.raises(UpstreamRateLimited):
        run_stream(kind, fake)
    assert len(chat_requests(fake)) == 3


def test_503_is_retried_then_succeeds(fake: FakeUpstream, kind: str) -> None:
    fake.fail_next(Fault.status_code(503))
    text, _ = run_stream(kind, fake)
    assert text == EXPECTED
    assert len(chat_requests(fake)) == 2


def test_gateway_errors_on_every_attempt_become_unavailable(fake: FakeUpstream, kind: str) -> None:
    fake.fail_next(Fault.status_code(502), Fault.status_code(504), Fault.status_code(503))
    with pytest.raises(UpstreamUnavailable) as caught:
        run_stream(kind, fake)
    assert caught.value.context == {"provider": "up", "status": 503}
    assert len(chat_requests(fake)) == 3


def test_500_is_not_retried(fake: FakeUpstream, kind: str) -> None:
    fake.fail_next(Fault.status_code(500, message="boom"))
    with pytest.raises(UpstreamUnavailable, match="boom"):
        run_stream(kind, fake)
    assert len(chat_requests(fake)) == 1


def test_400_is_rejected_with_upstreams_message_and_never_the_key(fake: FakeUpstream, kind: str) -> None:
    fake.fail_next(Fault.status_code(400, message=f"temperature out of range (key {KEY})"))
    with pytest.raises(UpstreamRejected) as caught:
        run_stream(kind, fake)
    assert "temperature out of range" in caught.value.detail
    assert KEY not in caught.value.detail
    assert KEY not in repr(caught.value.context)
    assert len(chat_requests(fake)) == 1


def test_drop_mid_stream_raises_after_partial_text_and_is_not_retried(fake: FakeUpstream, kind: str) -> None:
    fake.fail_next(Fault.drop(after=3))

    async def go() -> list[str]:
        provider = make(kind, url_of(fake, kind))
        seen: list[str] = []
        try:
            with pytest.raises(UpstreamProtocolError) as caught:
                async for item in provider.stream(REQUEST):
                    assert isinstance(item, TextDelta)
                    seen.append(item.text)
            assert caught.value.context["provider"] == "up"
        finally:
            await provider.aclose()
        return seen

    partial = asyncio.run(go())
    assert "".join(partial) == "Hello from fake-large."  # the caller can store this
    assert len(chat_requests(fake)) == 1


def test_malformed_stream_is_a_protocol_error(fake: FakeUpstream, kind: str) -> None:
    fake.fail_next(Fault.garbage())
    with pytest.raises(UpstreamProtocolError, match="malformed"):
        run_stream(kind, fake)
    assert len(chat_requests(fake)) == 1


def test_slow_first_byte_times_out_without_retry(fake: FakeUpstream, kind: str) -> None:
    fake.fail_next(Fault.slow_first_byte(2.0))
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        run_stream(kind, fake, http=HttpSettings(read=0.3))
    assert time.monotonic() - started < 1.5
    assert len(chat_requests(fake)) == 1  # the model may be working: a retry would pay twice


def test_connection_refused_is_unavailable() -> None:
    with socket.socket() as s:  # a port nobody listens on once this closes
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for kind in ("openai", "ollama"):
        provider = make(
            kind,
            f"http://127.0.0.1:{port}/v1",
            retry=RetryPolicy(attempts=2, wait_initial=0.01, wait_jitter=0),
        )
        with pytest.raises(UpstreamUnavailable) as caught:
            asyncio.run(collect(provider))
        assert caught.value.context == {"provider": "up"}
        assert isinstance(caught.value.__cause__, Exception)  # re-raised `from` httpx's error


def test_cancelling_the_consumer_task_disconnects_upstream_within_a_second(
    fake: FakeUpstream, kind: str
) -> None:
    fake.fail_next(Fault.endless())

    async def go() -> float:
        provider = make(kind, url_of(fake, kind))
        got_some = asyncio.Event()

        async def consume() -> None:
            n = 0
            async for _ in provider.stream(REQUEST):
                n += 1
                if n == 3:
                    got_some.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(got_some.wait(), 5)
        task.cancel()
        cancelled_at = time.monotonic()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await provider.aclose()
        return cancelled_at

    cancelled_at = asyncio.run(go())
    gone = fake.wait_for_disconnect(1.0)
    assert gone is not None, "upstream never saw the client leave"
    assert gone.at - cancelled_at < 1.0


def test_closing_the_stream_early_disconnects_upstream(fake: FakeUpstream, kind: str) -> None:
    fake.fail_next(Fault.endless())

    async def go() -> float:
        provider = make(kind, url_of(fake, kind))
        async with contextlib.aclosing(provider.stream(REQUEST)) as items:
            async for item in items:
                assert isinstance(item, TextDelta)
                break
        closed_at = time.monotonic()
        await provider.aclose()
        return closed_at

    closed_at = asyncio.run(go())
    gone = fake.wait_for_disconnect(1.0)
    assert gone is not None and gone.at - closed_at < 1.0


def test_a_stream_that_never_ends_is_cut_at_stream_max(fake: FakeUpstream, kind: str) -> None:
    fake.fail_next(Fault.endless())
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout, match="past 0.3s"):
        run_stream(kind, fake, http=HttpSettings(stream_max=0.3))
    assert time.monotonic() - started < 2.0
    assert fake.wait_for_disconnect(1.0) is not None


def test_list_models(fake: FakeUpstream, kind: str) -> None:
    async def go() -> list[str]:
        provider = make(kind, url_of(fake, kind))
        try:
            return await provider.list_models()
        finally:
            await provider.aclose()

    assert asyncio.run(go()) == ["fake-large", "fake-small"]


def test_list_models_retries_a_503(fake: FakeUpstream, kind: str) -> None:
    fake.fail_next(Fault.status_code(503))

    async def go() -> list[str]:
        provider = make(kind, url_of(fake, kind))
        try:
            return await provider.list_models()
        finally:
            await provider.aclose()

    assert asyncio.run(go()) == ["fake-large", "fake-small"]
    assert [r.method for r in fake.requests] == ["GET", "GET"]


def test_a_model_list_larger_than_is_read_is_refused_without_reading_it_whole(kind: str) -> None:
    with FakeUpstream(models=("m" * (9 * 1024 * 1024),)) as huge:

        async def go() -> None:
            provider = make(kind, url_of(huge, kind))
            try:
                await provider.list_models()
            finally:
                await provider.aclose()

        with pytest.raises(UpstreamTooLarge):
            asyncio.run(go())


def test_a_line_larger_than_is_read_ends_the_stream_without_reading_it_whole(fake: FakeUpstream, kind: str) -> None:
    fake.fail_next(Fault.reply("fine", "x" * (9 * 1024 * 1024)))

    async def go() -> list[object]:
        provider = make(kind, url_of(fake, kind))
        items: list[object] = []
        try:
            with pytest.raises(UpstreamTooLarge):
                async for item in provider.stream(REQUEST):
                    items.append(item)
        finally:
            await provider.aclose()
        return items

    assert asyncio.run(go()) == [TextDelta("fine")]
