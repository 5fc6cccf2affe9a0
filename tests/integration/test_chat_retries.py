"""A chat completion whose reply was generated but could not be recorded in time (the database busy)
answers 503 `reply-not-recorded`, and the official `openai` client retries it with the same history:
the retry gets that reply, whether it was recorded before the retry came or is still waiting to be,
and the model is called once. The database is made busy on purpose: the test holds, from a
connection of its own, the row the reply's record must lock (tests/retrykit.py)."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.fakeupstream import Fault
from tests.postgres import run
from tests.retrykit import HELD, busy_server, retried_past_a_held_record, stored

MODEL = "fake-large"
QUESTION = "keep this one"
ANSWER = "Hello from fake-large. You said: " + QUESTION
AUTO_THREAD = {"Convtree-Auto-Thread": "on"}


async def ask(client: openai.AsyncOpenAI) -> Any:
    return await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": QUESTION}])


@pytest.mark.parametrize("held", HELD)
def test_a_retry_after_the_reply_was_not_recorded_in_time_gets_that_reply(databases, upstream, held):
    """`conversations`: the kept reply is recorded before the retry comes; `pending_replies`: the
    retry comes while the reply still waits to be recorded, and waits for it."""
    with busy_server(databases, upstream) as srv:
        tenant, key = srv.new_key()
        upstream.fail_next(Fault.hold(after=1))

        completion, turn, client = run(
            retried_past_a_held_record(srv, tenant, key, upstream, held, "/v1", ask, AUTO_THREAD)
        )
        assert client.answers == [(503, "reply-not-recorded"), (200, None)]
        # The database was there, only busy: the client is told so, not that it cannot be reached.
        message = client.messages[0]
        assert "too busy" in message and "cannot be reached" not in message, client.messages
        assert completion.choices[0].message.content == ANSWER
        assert completion.model_extra["message_id"] == str(turn["reply_id"])
        assert stored(srv, key, turn["conversation_id"]) == (
            [("user", QUESTION), ("assistant", ANSWER)],
            1,
        )
        assert len(upstream.requests) == 1
