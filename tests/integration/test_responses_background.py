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
from tests.turnkit import wait_for

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


def test_a_cancel_asked_of_another_process_reaches_the_owner_through_a_notification(pair, upstream):
    """The owner says nothing more (no checkpoint to read the flag with) and renews its lease only
    every 15 s, longer than a cancel waits: only the cancel's notification can stop it in time."""
    first, second = pair
    upstream.fail_next(Fault.hold(after=2))
    with sdk(first) as one, sdk(second) as two:
        created = one.responses.create(model="fake-large", input="hold on", background=True)
        wait_for(lambda: two.responses.retrieve(created.id).output_text)  # its first checkpoint is written
        cancelled = two.responses.cancel(created.id)
        assert cancelled.status == "cancelled"
        assert upstream.wait_for_disconnect(2.0) is not None  # the owner stopped the model
        assert one.responses.retrieve(created.id).output_text == cancelled.output_text != ""


def test_ten_background_responses_survive_their_server_killed_mid_generation(databases, upstream):
    """The fault test, small: the serving process is killed (SIGKILL) while ten background replies
    stream; another process, following their streams all along, closes them out from their
    checkpoints. Every response ends; what a follower was shown is what is stored, once."""
    import threading

    url = databases.migrated()
    lease = {"CONVTREE_REPLY_LEASE_SECONDS": "1.5", "CONVTREE_REPLY_CHECKPOINT_SECONDS": "0.05"}
    with fake_serve_process(url, upstream, **lease) as first, fake_serve_process(url, upstream, **lease) as second:
        _, first.key = first.new_key("fault", "t")
        second.key = first.key
        upstream.fail_next(*[Fault.endless()] * 10)
        with sdk(first) as one:
            ids = [one.responses.create(model="fake-large", input=f"go {i}", background=True).id for i in range(10)]
        followed: dict[str, list[Any]] = {rid: [] for rid in ids}

        def follow(rid: str) -> None:
            with sdk(second) as two, two.responses.retrieve(rid, stream=True) as stream:
                followed[rid].extend(stream)

        threads = [threading.Thread(target=follow, args=(rid,)) for rid in ids]
        for t in threads:
            t.start()
        time.sleep(0.5)  # every reply has streamed some ticks
        assert first.process is not None
        first.process.kill()
        first.process.wait()
        for t in threads:
            t.join(timeout=30)
        with sdk(second) as two:
            for rid in ids:
                events = followed[rid]
                assert [e.sequence_number for e in events] == list(range(len(events)))  # no gap, no repeat
                shown = "".join(e.delta for e in events if e.type == "response.output_text.delta")
                assert shown and set(shown.split()) == {"tick"}
                final = two.responses.retrieve(rid)
                assert final.status == "incomplete" and final.incomplete_details is not None
                assert final.incomplete_details.reason == "owner_lost"
                assert events[-1].type == "response.incomplete"
                assert final.output_text == shown  # nothing shown was lost, nothing doubled
        assert fetch(url, "SELECT count(*) AS n FROM pending_replies")[0]["n"] == 0
