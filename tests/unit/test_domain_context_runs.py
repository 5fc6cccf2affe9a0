"""A reply's context, recorded as runs along its path: as long as the window's cuts, not the path."""

import uuid

import msgspec

from service.domain.events import ContextRun, Generation, context_runs

PATH = [uuid.UUID(int=i) for i in range(1, 11)]


def run(first: int, last: int) -> ContextRun:
    return ContextRun(first_id=PATH[first], last_id=PATH[last], count=last - first + 1)


def test_the_whole_path_is_one_run():
    assert context_runs(PATH, PATH) == [run(0, 9)]


def test_a_window_that_keeps_the_system_message_and_the_tail_is_two_runs():
    assert context_runs(PATH, [PATH[0], *PATH[6:]]) == [run(0, 0), run(6, 9)]


def test_a_tail_is_one_run_and_every_gap_starts_a_new_one():
    assert context_runs(PATH, PATH[7:]) == [run(7, 9)]
    assert context_runs(PATH, PATH[::3]) == [run(0, 0), run(3, 3), run(6, 6), run(9, 9)]


def test_nothing_sent_is_no_run():
    assert context_runs(PATH, []) == []
    assert context_runs([], []) == []


def test_a_reply_at_any_depth_records_its_context_in_the_same_few_bytes():
    def recorded(depth: int) -> bytes:
        path = [uuid.UUID(int=i) for i in range(1, depth + 1)]
        generation = Generation(
            provider="p", model="m", requested_model="m", finish_reason="stop", latency_ms=1.0,
            context=context_runs(path, path),
        )  # fmt: skip
        return msgspec.json.encode(generation)

    assert len(recorded(10_000)) - len(recorded(10)) == len("10000") - len("10")  # the count's digits


def test_a_reply_recorded_before_runs_existed_decodes_and_encodes_exactly_as_it_was():
    before = (
        b'{"provider":"p","model":"m","requested_model":"m","finish_reason":"stop","prompt_tokens":null,'
        b'"completion_tokens":null,"latency_ms":1.0,"first_token_ms":null,"response_id":null,'
        b'"context_ids":["00000000-0000-0000-0000-000000000001"],"params":{},"interruption":null}'
    )
    old = msgspec.json.decode(before, type=Generation)
    assert old.context is msgspec.UNSET and old.context_ids == [PATH[0]]
    assert msgspec.json.encode(old) == before
