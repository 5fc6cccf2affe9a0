"""The error a turn's stream ended with is read back from the kind its record keeps (a resumed
stream ends with it): `error_of` is `error_kind` read backwards."""

from __future__ import annotations

from service.app.turn import record
from service.app.turn.relay import CANCELLED, CLIENT_LEFT, DISCARDED, LEASE_LOST, SHUTDOWN
from service.domain import errors


def every_error() -> list[type[errors.ConvtreeError]]:
    found, todo = [], [errors.ConvtreeError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def test_every_error_kind_reads_back_as_its_error_with_its_detail():
    for cls in every_error():
        back = record.error_of(record.error_kind(cls()), "what the record says")
        assert type(back) is cls and back.detail == "what the record says"


def test_interruptions_read_back_as_an_interrupted_reply_and_a_shutdown_as_one():
    for why in (CLIENT_LEFT, DISCARDED, CANCELLED, LEASE_LOST, record.OWNER_LOST, record.RECORD_DELAYED):
        back = record.error_of(why.kind, why.detail)
        assert type(back) is errors.ReplyInterrupted and back.detail == why.detail
    assert type(record.error_of(SHUTDOWN.kind, SHUTDOWN.detail)) is errors.ServiceShuttingDown
    assert type(record.error_of("abandoned", "gone")) is errors.ReplyAbandoned


def test_a_kind_no_longer_known_reads_back_as_an_upstream_error():
    back = record.error_of("some_old_failure", "")
    assert type(back) is errors.UpstreamError and back.detail == errors.UpstreamError.__doc__.strip()
