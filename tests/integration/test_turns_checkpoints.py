"""A reply's progress is checkpointed while it streams: a server killed mid-reply (SIGKILL: no
shutdown, no record) leaves the text its client was shown, which another server records as the
reply, interrupted (`owner_lost`), once the dead server's lease runs out."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakeupstream import Fault, FakeUpstream
from tests.helpers import create
from tests.postgres import Databases, fetch
from tests.servers import ServeProcess, fake_serve_process
from tests.turnkit import assert_settled, sse, wait_for

LEASE = "1.5"  # seconds: renewed every quarter of it, and swept as often


def serving(url: str, upstream: FakeUpstream) -> ServeProcess:
    return fake_serve_process(
        url, upstream, CONVTREE_REPLY_LEASE_SECONDS=LEASE, CONVTREE_REPLY_CHECKPOINT_SECONDS="0.05"
    )


@pytest.fixture
def first(databases: Databases, upstream: FakeUpstream) -> Iterator[ServeProcess]:
    with serving(databases.migrated(), upstream) as process:
        _, process.key = process.new_key("kill", "t")
        yield process


def test_a_server_killed_mid_reply_leaves_the_text_it_streamed_recorded_by_another(first, upstream):
    upstream.fail_next(Fault.endless())  # " tick" every 20 ms until the client leaves
    with first.client(timeout=30) as api:
        cid = create(api)["id"]
        with api.stream("POST", f"/v1/conversations/{cid}/turns", json={"content": "go", "stream": True}) as r:
            events = sse(r)
            started = next(events)[1]
            shown = "".join(next(events)[1]["text"] for _ in range(25))
            assert first.process is not None
            first.process.kill()  # SIGKILL: no shutdown, nothing recorded by this process
            first.process.wait()
    assert shown.split() == ["tick"] * len(shown.split()) and len(shown.split()) >= 25
    # Before the lease runs out, the reply is still pending: nothing was recorded by the dead process.
    reply_id = started["assistant_message_id"]
    assert fetch(first.database_url, "SELECT count(*) AS n FROM pending_replies")[0]["n"] == 1
    second = serving(first.database_url, upstream)
    second.start()
    try:
        with second.client(first.key) as api:
            url = f"/v1/conversations/{cid}/messages/{reply_id}"
            reply = wait_for(lambda: api.get(url).json() if api.get(url).status_code == 200 else None, timeout=15)
        # Everything the client was shown is kept (and perhaps a checkpointed piece it had not read yet).
        assert reply["content"].startswith(shown)
        assert set(reply["content"].split()) == {"tick"}
        g = reply["generation"]
        assert g["finish_reason"] == "interrupted" and g["interruption"]["kind"] == "owner_lost"
        assert g["provider"] == "openai" and g["first_token_ms"] is not None
        assert_settled(first.database_url, cid)
        # The checkpoints went with the pending row.
        assert fetch(first.database_url, "SELECT count(*) AS n FROM reply_chunks")[0]["n"] == 0
    finally:
        second.stop()
