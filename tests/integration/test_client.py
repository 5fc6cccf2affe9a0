"""convtree.client.Client against the real server: every native endpoint, retries, streams, problems."""

import subprocess
import sys
import uuid

import httpx
import pytest

from convtree.client import (
    Client,
    ContextRun,
    Conversation,
    Delta,
    Done,
    Message,
    NotFound,
    PreconditionFailed,
    Retry,
    TurnResult,
    TurnStarted,
    Unauthorized,
    last_window,
)

FAST = Retry(attempts=4, backoff=0.01, max_wait=0.5)


class LosesFirstAnswers(httpx.BaseTransport):
    """Forwards every request to the server, but loses the answers to the first `lose` POSTs after
    the server has handled them (as a dropped connection would); and answers the first `busy`
    requests with a 503 and Retry-After, without forwarding them."""

    def __init__(self, lose: int = 0, busy: int = 0) -> None:
        self.inner = httpx.HTTPTransport()
        self.lose = lose
        self.busy = busy
        self.seen: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        if self.busy > 0:
            self.busy -= 1
            return httpx.Response(503, headers={"Retry-After": "0"}, json={"type": "x", "title": "busy", "status": 503})
        response = self.inner.handle_request(request)
        if request.method == "POST" and self.lose > 0:
            self.lose -= 1
            response.read()
            response.close()
            raise httpx.ReadError("connection lost", request=request)
        return response


@pytest.fixture
def key(server):
    return server.new_key()[1]


@pytest.fixture
def ct(server, key):
    with Client(server.base_url, key, retry=FAST) as client:
        yield client


def test_conversations_messages_and_branches(ct):
    conversation = ct.create_conversation(title="Trip", system="Be terse.", metadata={"team": "a"})
    assert isinstance(conversation, Conversation) and conversation.message_count == 1
    first = ct.append(conversation.id, "Where to?")
    reply = ct.append(conversation.id, "Lisbon.", role="assistant")
    assert isinstance(reply, Message) and reply.parent_message_id == first.id
    edit = ct.append(conversation.id, "Where to, cheaply?", parent_message_id=first.parent_message_id)
    assert ct.message(conversation.id, first.id) == first
    children = ct.children(conversation.id, first.parent_message_id)
    assert {m.id for m in children.children} == {first.id, edit.id}
    assert len(ct.tree(conversation.id).messages) == 4
    assert {leaf.message_id for leaf in ct.leaves(conversation.id).leaves} == {reply.id, edit.id}
    moved = ct.move_head(conversation.id, reply.id)
    assert moved.head_id == reply.id
    context = ct.context(conversation.id)
    assert [m.content for m in context.messages] == ["Be terse.", "Where to?", "Lisbon."]
    # The system prompt is always kept, whatever the window.
    assert [m.content for m in ct.context(conversation.id, first.id, last=1).messages] == ["Be terse.", "Where to?"]
    with pytest.raises(PreconditionFailed) as stale:
        ct.append(conversation.id, "late", expected_head=edit.id)
    assert stale.value.status == 412 and stale.value.slug == "head-moved"
    assert ct.conversation(conversation.id).head_id == reply.id


def test_replay_fork_audit_redact_export_and_import(server, ct):
    conversation = ct.create_conversation(title="History")
    first = ct.append(conversation.id, "one")
    then = ct.conversation(conversation.id)
    ct.append(conversation.id, "two")
    assert ct.conversation(conversation.id, as_of=then.last_seq).message_count == 1
    assert len(ct.tree(conversation.id, as_of=then.last_seq).messages) == 1
    fork = ct.fork(conversation.id, first.id, title="Fork")
    assert fork.forked_from is not None and fork.forked_from.message_id == first.id
    redacted = ct.redact(conversation.id, first.id, reason="pii", erase=True)
    assert redacted.redacted is not None and redacted.redacted.erased
    report = ct.audit(conversation.id)
    assert report.valid and report.bodies_erased == 1
    exported = ct.export(conversation.id)
    assert isinstance(exported, bytes) and exported.count(b"\n") >= 3
    events = list(ct.iter_events(conversation.id, limit=2))
    assert [e.type for e in events][:2] == ["conversation_created", "message_appended"]
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    # An import re-creates the conversation under its own id: here, in another tenant.
    with Client(server.base_url, server.new_key()[1], retry=FAST) as elsewhere:
        imported = elsewhere.import_conversation(exported)
        assert imported.id == conversation.id
        assert imported.message_count == ct.conversation(conversation.id).message_count
        assert elsewhere.audit(imported.id).valid


def test_pages_are_iterated_to_the_end(ct):
    made = {ct.create_conversation(title=f"c{i}").id for i in range(5)}
    assert {c.id for c in ct.iter_conversations(limit=2)} == made
    page = ct.list_conversations(limit=2)
    assert len(page.items) == 2 and page.next_cursor is not None


def test_the_tenant_feed_pages_and_follows(ct):
    conversation = ct.create_conversation(title="Feed")
    page = ct.feed(after=0, limit=10)
    assert [e.conversation_id for e in page.items] == [conversation.id]
    stream = ct.follow(after=page.next_after)
    ct.append(conversation.id, "hello")
    event = next(stream)
    assert event.type == "message_appended" and event.seq > page.next_after
    stream.close()


def test_problems_are_typed_exceptions_with_their_details(server, ct):
    missing = uuid.uuid4()
    with pytest.raises(NotFound) as caught:
        ct.conversation(missing)
    assert caught.value.status == 404 and caught.value.slug == "conversation-not-found"
    assert caught.value.title and caught.value.request_id
    with Client(server.base_url, "ct_wrong", retry=FAST) as stranger:
        with pytest.raises(Unauthorized):
            stranger.list_conversations()


def test_a_turn_and_its_streamed_twin_with_the_echo_provider(ct):
    conversation = ct.create_conversation(title="Turns")
    result = ct.turn(conversation.id, "hello there", provider="echo", window=last_window(5))
    assert isinstance(result, TurnResult) and result.assistant_message.content == "echo: hello there"
    events = list(ct.stream_turn(conversation.id, "stream me", provider="echo"))
    assert isinstance(events[0], TurnStarted)
    assert isinstance(events[-1], Done) and events[-1].message.generation is not None
    # Shown its whole path (hello there, its reply, stream me): one run, ending at the turn's message.
    assert events[-1].message.generation.context == [
        ContextRun(first_id=result.user_message_id, last_id=events[0].user_message_id, count=3)
    ]
    text = "".join(e.text for e in events if isinstance(e, Delta))
    assert text == events[-1].message.content == "echo: stream me"
    again = ct.regenerate(conversation.id, result.assistant_message_id, provider="echo")
    assert again.assistant_message.parent_message_id == result.user_message_id
    streamed = list(ct.stream_regenerate(conversation.id, result.assistant_message_id, provider="echo"))
    assert isinstance(streamed[-1], Done)
    assert len(ct.children(conversation.id, result.user_message_id).children) == 3


def test_a_create_whose_answer_was_lost_is_retried_with_the_same_key_and_written_once(server, key):
    transport = LosesFirstAnswers(lose=1)
    with Client(server.base_url, key, retry=FAST, transport=transport) as ct:
        conversation = ct.create_conversation(title="Once")
        assert [c.id for c in ct.iter_conversations()] == [conversation.id]
        message = ct.append(conversation.id, "only once")  # answered at once: a new key
    posts = [r for r in transport.seen if r.method == "POST"]
    assert len(posts) == 3
    assert posts[0].headers["Idempotency-Key"] == posts[1].headers["Idempotency-Key"]
    assert posts[2].headers["Idempotency-Key"] != posts[0].headers["Idempotency-Key"]
    assert message.content == "only once"


def test_a_streamed_turn_whose_answer_was_lost_is_resumed_without_a_second_turn(server, key):
    transport = LosesFirstAnswers(lose=1)
    with Client(server.base_url, key, retry=FAST, transport=transport) as ct:
        conversation = ct.create_conversation(title="Resume", idempotency_key="resume-create")
        transport.lose = 1
        events = list(ct.stream_turn(conversation.id, "again and again", provider="echo"))
        assert sum(isinstance(e, TurnStarted) for e in events) == 1
        assert isinstance(events[-1], Done)
        assert "".join(e.text for e in events if isinstance(e, Delta)) == events[-1].message.content
        assert ct.conversation(conversation.id).message_count == 2


def test_503_is_retried_after_its_retry_after(server, key):
    transport = LosesFirstAnswers(busy=2)
    with Client(server.base_url, key, retry=FAST, transport=transport) as ct:
        assert ct.list_conversations().items == []
    assert len(transport.seen) == 3
    with Client(server.base_url, key, retry=Retry(attempts=2, backoff=0), transport=LosesFirstAnswers(busy=5)) as ct:
        with pytest.raises(Exception) as caught:
            ct.list_conversations()
        assert getattr(caught.value, "status", None) == 503


def test_the_client_does_not_need_the_server_package():
    code = "import sys, convtree.client; assert not [m for m in sys.modules if m.split('.')[0] == 'service'], 'service'"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).returncode == 0


class CutAfterFirstEvent(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream) -> None:
        self.inner = inner

    def __iter__(self):
        for chunk in self.inner:
            if b"\n\n" in chunk:
                yield chunk[: chunk.index(b"\n\n") + 2]
                raise httpx.ReadError("connection lost mid-stream")
            yield chunk

    def close(self) -> None:
        self.inner.close()


class CutsFirstStream(httpx.BaseTransport):
    """Forwards requests; the first streamed answer breaks off after its first event."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.cut = False
        self.keys: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.headers.get("Accept") == "text/event-stream" and request.method == "POST":
            self.keys.append(request.headers["Idempotency-Key"])
            if not self.cut:
                self.cut = True
                response.stream = CutAfterFirstEvent(response.stream)
        return response


def test_a_streamed_turn_cut_off_mid_stream_is_resumed_by_its_key(server, key):
    transport = CutsFirstStream()
    with Client(server.base_url, key, retry=FAST, transport=transport) as ct:
        conversation = ct.create_conversation(title="Cut")
        events = list(ct.stream_turn(conversation.id, "cut me off", provider="echo"))
        assert sum(isinstance(e, TurnStarted) for e in events) == 1
        assert isinstance(events[-1], Done)
        assert "".join(e.text for e in events if isinstance(e, Delta)) == events[-1].message.content
        assert ct.conversation(conversation.id).message_count == 2
    assert len(transport.keys) >= 2 and len(set(transport.keys)) == 1
