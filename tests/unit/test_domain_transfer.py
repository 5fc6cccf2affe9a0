"""Import rules, pure: given an export (validly chained or not), the plan or the first line at fault."""

import uuid
from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest

from service.domain.errors import InvalidExport
from service.domain.events import (
    GENESIS_HASH,
    ConversationCreated,
    ConversationForked,
    Envelope,
    HeadMoved,
    MessageAppended,
    MessageRedacted,
    TurnFailed,
    body_digest,
    seal,
)
from service.domain.history import export_line
from service.domain.stored import Stored
from service.domain.transfer import check_inherited, parse_export, plan_import, reseal

CID = uuid.uuid4()
A, B, C = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()


def export_of(*events, contents=None, created_at=datetime(2024, 1, 1, tzinfo=UTC)):
    """An export of `events`, correctly chained: whatever is wrong with it is wrong with the tree."""
    contents = {A: "a", B: "b", C: "c"} if contents is None else contents
    envelopes = [
        Envelope(seq=i + 1, tenant="t", conversation_id=CID, family_id=CID, actor="x", request_id=None,
                 created_at=created_at + timedelta(seconds=i))
        for i in range(len(events))
    ]
    sealed = seal(GENESIS_HASH, envelopes, list(events))
    return b"".join(
        msgspec.json.encode(export_line(s, contents.get(s.columns.message_id))) + b"\n" for s in sealed
    )


def failed_turn(user_message_id):
    return TurnFailed(reply_id=uuid.uuid4(), user_message_id=user_message_id, provider="p", model="m",
                      error="upstream_timeout", detail="slow")


def msg(mid, parent=None, depth=0, text=None):
    text = text or {A: "a", B: "b", C: "c"}[mid]
    return MessageAppended(message_id=mid, parent_id=parent, role="user", content=text, depth=depth, body_sha256=body_digest(text))


def refusal(raw):
    with pytest.raises(InvalidExport) as caught:
        plan_import(parse_export(raw))
    return caught.value.context["line"], caught.value.context["reason"]


def test_a_sound_export_plans_its_bodies_and_reseals_to_the_same_hashes():
    raw = export_of(ConversationCreated(title="t"), msg(A), msg(B, A, 1), HeadMoved(message_id=A, previous_id=B))
    plan = plan_import(parse_export(raw))
    assert plan.conversation_id == CID and plan.bodies == {A: Stored("a"), B: Stored("b")} and plan.fork is None
    resealed = reseal(plan, "another tenant", uuid.uuid4(), [100, 205, 307, 400])
    assert [s.envelope.seq for s in resealed] == [100, 205, 307, 400]
    assert [s.hash.hex() for s in resealed] == [line.hash for line in plan.lines]


def test_a_failed_turn_is_kept_as_the_record_it_is():
    plan = plan_import(parse_export(export_of(ConversationCreated(), msg(A), failed_turn(A))))
    assert [line.type for line in plan.lines][-1] == "turn_failed"


def test_an_erased_message_brings_no_body_even_if_the_file_carries_one():
    raw = export_of(ConversationCreated(), msg(A), MessageRedacted(message_id=A, reason="r", erase=True))
    assert plan_import(parse_export(raw)).bodies == {}


@pytest.mark.parametrize(
    ("events", "line", "reason"),
    [
        ((msg(A),), 1, "no-creation"),
        ((ConversationCreated(), msg(A), msg(B)), 3, "bad-root"),
        ((ConversationCreated(), msg(A), msg(B, A, 2)), 3, "bad-depth"),
        ((ConversationCreated(), msg(A), msg(B, C, 1)), 3, "parent-not-found"),
        ((ConversationCreated(), msg(A), msg(A, A, 1, "a")), 3, "duplicate-message"),
        ((ConversationCreated(), msg(A), HeadMoved(message_id=B)), 3, "unknown-message"),
        ((ConversationCreated(), MessageRedacted(message_id=A, reason="r")), 2, "unknown-message"),
        ((ConversationCreated(), msg(A), ConversationCreated()), 3, "second-creation"),
        ((ConversationCreated(), msg(A), failed_turn(B)), 3, "unknown-message"),
    ],
)
def test_a_broken_tree_is_refused_at_its_first_bad_line(events, line, reason):
    assert refusal(export_of(*events)) == (line, reason)


def test_times_must_be_utc_for_the_hashes_to_survive_the_database():
    # Chained correctly, but PostgreSQL hands every timestamptz back in UTC: the hashed text would change.
    raw = export_of(ConversationCreated(), created_at=datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=2))))
    assert refusal(raw) == (1, "malformed")


def test_a_fork_names_what_it_needs_from_its_source():
    base = uuid.uuid4()
    raw = export_of(
        ConversationForked(source_conversation_id=uuid.uuid4(), source_message_id=base), msg(A, base, 3)
    )
    plan = plan_import(parse_export(raw))
    assert plan.fork is not None and plan.fork.source_message_id == base
    check_inherited(plan, {base: 2})  # on the source's path, at the depth the fork wrote under it
    with pytest.raises(InvalidExport) as caught:
        check_inherited(plan, {base: 1})
    assert caught.value.context["line"] == 2
    with pytest.raises(InvalidExport):
        check_inherited(plan, {})
