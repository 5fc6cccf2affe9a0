"""Audit rules, pure: given a sealed log (and the bodies' digests as stored), the verdict."""

import uuid
from datetime import UTC, datetime

import msgspec
import pytest

from service.domain.audit import SUMMARY_FIELDS, ChainCheck, Checked, Reason, summary_differences
from service.domain.events import (
    GENESIS_HASH,
    ConversationCreated,
    Envelope,
    MessageAppended,
    MessageRedacted,
    Sealed,
    body_digest,
    seal,
)

CID = uuid.uuid4()


def sealed_log(*events):
    envelopes = [
        Envelope(seq=10 * (i + 1), tenant="t", conversation_id=CID, family_id=uuid.uuid4(), actor="a",
                 request_id=None, created_at=datetime(2024, 1, 1, tzinfo=UTC))
        for i in range(len(events))
    ]
    return seal(GENESIS_HASH, envelopes, list(events))


def message(mid, parent=None, depth=0, text="hi"):
    return MessageAppended(message_id=mid, parent_id=parent, role="user", content=text, depth=depth, body_sha256=body_digest(text))


def verdict(log, digests, summary=None, batch=1000):
    check = ChainCheck(CID)
    items = [Checked(s, digests.get(s.columns.message_id)) for s in log]
    for i in range(0, len(items), batch):
        if not check.feed(items[i : i + batch]):
            break
    return check.report(log[-1].hash if summary is None else summary)


M1, M2 = uuid.uuid4(), uuid.uuid4()
LOG = sealed_log(ConversationCreated(), message(M1), message(M2, M1, 1, "there"))
DIGESTS = {M1: body_digest("hi"), M2: body_digest("there")}


@pytest.mark.parametrize("batch", [1, 2, 1000])
def test_an_intact_log_verifies_however_it_is_batched(batch):
    report = verdict(LOG, DIGESTS, batch=batch)
    assert report.valid and report.events_checked == 3 and report.head_hash == LOG[-1].hash.hex()
    assert (report.bodies_checked, report.bodies_erased) == (2, 0)


@pytest.mark.parametrize("batch", [1, 2, 1000])
def test_a_forged_link_is_named_however_it_is_batched(batch):
    forged = [LOG[0], Sealed(LOG[1].envelope, LOG[1].columns, bytes(32)), LOG[2]]
    report = verdict(forged, DIGESTS, batch=batch)
    assert (report.valid, report.first_invalid_seq, report.reason) == (False, 20, Reason.HASH_MISMATCH)
    assert report.head_hash == LOG[0].hash.hex()  # the last link that still verifies


def test_a_removed_event_is_named_by_the_next_one():
    report = verdict([LOG[0], LOG[2]], DIGESTS)
    assert (report.first_invalid_seq, report.reason) == (30, Reason.HASH_MISMATCH)


def test_a_body_that_changed_is_named():
    report = verdict(LOG, {**DIGESTS, M2: body_digest("forged")})
    assert (report.first_invalid_seq, report.reason) == (30, Reason.BODY_MISMATCH)


def test_a_missing_body_is_tampering_unless_the_message_was_redacted():
    report = verdict(LOG, {M1: DIGESTS[M1]})
    assert (report.first_invalid_seq, report.reason) == (30, Reason.BODY_MISSING)
    redacted = sealed_log(
        ConversationCreated(), message(M1), message(M2, M1, 1, "there"),
        MessageRedacted(message_id=M2, reason="gdpr", erase=True),
    )
    report = verdict(redacted, {M1: DIGESTS[M1]})
    assert report.valid and report.bodies_erased == 1 and report.bodies_checked == 1


def test_a_summary_naming_another_head_is_a_mismatch():
    report = verdict(LOG, DIGESTS, summary=LOG[1].hash)
    assert (report.valid, report.reason, report.first_invalid_seq) == (False, Reason.HEAD_MISMATCH, 30)


def test_an_event_of_another_conversation_is_refused():
    elsewhere = msgspec.structs.replace(LOG[1].envelope, conversation_id=uuid.uuid4())
    stranger = Sealed(elsewhere, LOG[1].columns, LOG[1].hash)
    report = verdict([LOG[0], stranger, LOG[2]], DIGESTS)
    assert (report.first_invalid_seq, report.reason) == (20, Reason.CONVERSATION_MISMATCH)


def _summary(**changes):
    row = {field: None for field in SUMMARY_FIELDS}
    row |= {"title": "t", "metadata": '{"a": 1, "b": [1, 2]}', "head_id": uuid.UUID(int=7), "message_count": 3}
    return row | changes


def test_a_summary_as_its_log_folds_it_has_no_differences_even_spelled_otherwise():
    assert summary_differences(_summary(metadata='{"b":[1,2],"a":1}'), _summary()) == []


def test_each_summary_column_that_differs_from_the_fold_is_named():
    stored = _summary(head_id=uuid.UUID(int=8), metadata='{"a": 2, "b": [1, 2]}', message_count=4)
    assert summary_differences(stored, _summary()) == ["metadata", "head_id", "message_count"]
    report = ChainCheck(uuid.uuid4()).report(None, ["head_id"])
    assert (report.valid, report.reason, report.fields) == (False, Reason.SUMMARY_MISMATCH, ["head_id"])


def test_a_summary_whose_log_folds_to_nothing_differs_everywhere():
    assert summary_differences(_summary(), None) == list(SUMMARY_FIELDS)
