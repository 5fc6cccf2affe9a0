"""Background responses (`background: true`), driven by the official `openai` client: answered at
once, generated whatever the client does, polled, cancelled, and their stream resumed from another
server process sharing the database, with no gap and no repeat."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.fakeupstream import Fault, FakeUpstream
from tests.postgres import Databases, fetch
from tests.servers import ServeProcess, fake_serve_process

MODEL = "fake/fake-large"


@pytest.fixture
def client(model_server, upstream) -> Iterator[openai.OpenAI]:
    key = model_server.new_key()[1]
    with openai.OpenAI(base_url=model_server.base_url + "/openai/v1", api_key=key, max_retries=0) as c:
        yield c


def poll(client: openai.OpenAI, rid: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = client.responses.retrieve(rid)
        if found.status not in ("queued", "in_progress") or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_a_background_response_answers_at_once_and_is_polled_until_completed(client, upstream):
    upstream.fail_next(Fault.hold(after=2))  # two pieces, then nothing until released
    created = client.responses.create(model=MODEL, input="hello there", background=True)
    assert created.status == "in_progress" and created.background is True and created.output == []
    assert client.responses.retrieve(created.id).status == "in_progress"
    upstream.release()
    done = poll(client, created.id)
    assert done.status == "completed" and done.background is True
    assert done.output_text == "Hello from fake-large. You said: hello there"


def test_cancelling_a_background_response_stops_the_model_and_keeps_what_it_said(client, upstream):
    upstream.fail_next(Fault.endless())
    created = client.responses.create(model=MODEL, input="go on", background=True)
    time.sleep(0.3)  # some ticks, checkpointed
    cancelled = client.responses.cancel(created.id)
    assert cancelled.status == "cancelled" and cancelled.error is None
    assert set(cancelled.output_text.split()) == {"tick"}
    assert upstream.wait_for_disconnect(2.0) is not None
    assert client.responses.retrieve(created.id).status == "cancelled"
    # A cancel of a response that has ended changes nothing.
    assert client.responses.cancel(created.id).output_text == cancelled.output_text


def test_a_background_response_cancelled_before_it_said_anything_is_cancelled_without_output(client, upstream):
    upstream.fail_next(Fault.slow_first_byte(5.0))
    created = client.responses.create(model=MODEL, input="wait", background=True)
    cancelled = client.responses.cancel(created.id)
    assert cancelled.status == "cancelled" and cancelled.output == []


@pytest.fixture
def pair(databases: Databases, upstream: FakeUpstream) -> Iterator[tuple[ServeProcess, ServeProcess]]:
    url = databases.migrated()
    with fake_serve_process(url, upstream) as first, fake_serve_process(url, upstream) as second:
        _, first.key = first.new_key("background", "t")
        second.key = first.key
        yield first, second


def sdk(process: ServeProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=process.base_url + "/openai/v1", api_key=process.key or "", max_retries=0)


def test_a_background_stream_resumes_from_another_process_with_no_gap_and_no_repeat(pair, upstream):
    first, second = pair
    upstream.fail_next(Fault.hold(after=3))
    with sdk(first) as one, sdk(second) as two:
        seen: list[Any] = []
        with one.responses.create(model="fake-large", input="tell me more", background=True, stream=True) as stream:
            for event in stream:
                seen.append(event)
                if event.type == "response.output_text.delta" and len(seen) >= 6:
                    break  # the client leaves mid-reply; the reply goes on
        rid = seen[0].response.id
        assert seen[0].type == "response.created" and seen[0].response.background is True
        assert one.responses.retrieve(rid).status == "in_progress"  # leaving did not stop it
        last = seen[-1].sequence_number
        rest: list[Any] = []
        with two.responses.retrieve(rid, stream=True, starting_after=last) as resumed:
            for event in resumed:
                rest.append(event)
                if len(rest) == 1:
                    upstream.release()
        numbers = [e.sequence_number for e in seen + rest]
        assert numbers == list(range(len(numbers)))  # no gap, no repeat
        assert rest[-1].type == "response.completed"
        text = "".join(e.delta for e in seen + rest if e.type == "response.output_text.delta")
        assert text == rest[-1].response.output_text == "Hello from fake-large. You said: tell me more"
        # The whole stream, again, from either process: the same events with the same numbers.
        with two.responses.retrieve(rid, stream=True) as again:
            replayed = [(e.type, e.sequence_number) for e in again]
        assert replayed == [(e.type, e.sequence_number) for e in seen + rest]
    # A background response's checkpoints are kept with it (its stream stays resumable).
    assert fetch(first.database_url, "SELECT count(*) AS n FROM reply_chunks")[0]["n"] >= 1
