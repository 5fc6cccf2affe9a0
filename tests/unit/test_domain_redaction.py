"""Redaction rules, pure: when a redaction records an event, and how a stored response is scrubbed."""

import uuid
from datetime import UTC, datetime

import pytest

from service.domain import views
from service.domain.errors import MessageNotFound
from service.domain.events import GENESIS_HASH, MessageRedacted
from service.domain.redaction import RedactMessage, decide_redact, scrub
from service.domain.tree import ConversationState, Node, fold

MID = uuid.uuid4()
STATE = ConversationState(
    conversation_id=uuid.uuid4(), family_id=uuid.uuid4(), head_id=MID, message_count=1, leaf_count=1,
    last_seq=3, last_hash=GENESIS_HASH,
)
TARGET = Node(message_id=MID, conversation_id=STATE.conversation_id, parent_id=None, role="user", depth=0,
              body_sha256=bytes(32), metadata={}, has_children=False)
AT = datetime(2024, 1, 1, tzinfo=UTC)
HIDDEN = views.Redaction(at=AT, by="a", reason="r", erased=False)
ERASED = views.Redaction(at=AT, by="a", reason="r", erased=True)


def cmd(erase=False):
    return RedactMessage(message_id=MID, reason="why", erase=erase)


def test_a_first_redaction_records_who_asked_why_and_whether_to_erase():
    events = decide_redact(STATE, TARGET, None, cmd(erase=True))
    assert events == [MessageRedacted(message_id=MID, reason="why", erase=True)]
    assert fold(STATE, events) == STATE  # the tree and its head are untouched


@pytest.mark.parametrize(("current", "erase", "records"), [
    (HIDDEN, False, False),  # already hidden: nothing more to say
    (HIDDEN, True, True),  # erasure may follow a redaction
    (ERASED, False, False),  # and cannot be undone or repeated
    (ERASED, True, False),
])
def test_redacting_again_records_only_an_erasure_not_yet_done(current, erase, records):
    assert bool(decide_redact(STATE, TARGET, current, cmd(erase))) is records


def test_an_unknown_message_cannot_be_redacted():
    with pytest.raises(MessageNotFound):
        decide_redact(STATE, None, None, cmd())


def test_a_stored_response_is_scrubbed_of_the_message_and_its_content_only():
    other = str(uuid.uuid4())
    response = {
        "id": str(MID), "content": "my secret", "role": "user",
        "children": [{"id": other, "content": "fine"}],
        "reply": {"content": "my secret", "title": "my secret"},
    }
    assert scrub(response, MID, "my secret", ERASED) == {
        "id": str(MID), "content": views.REDACTED_CONTENT, "role": "user",
        "redacted": {"at": "2024-01-01T00:00:00Z", "by": "a", "reason": "r", "erased": True},
        "children": [{"id": other, "content": "fine"}],
        "reply": {"content": views.REDACTED_CONTENT, "title": "my secret"},
    }
