"""Context windowing: given a path, a budget and a counter, then the messages sent."""

from __future__ import annotations

from dataclasses import dataclass

from service.domain.window import MESSAGE_OVERHEAD, REPLY_OVERHEAD, context_tokens, fit_window


@dataclass(frozen=True)
class Msg:
    role: str
    content: str


def words(message: Msg) -> int:
    return len(message.content.split())


def cost(*word_counts: int) -> int:
    """The budget that exactly fits messages of these word counts."""
    return REPLY_OVERHEAD + sum(n + MESSAGE_OVERHEAD for n in word_counts)


SYSTEM = Msg("system", "be kind")  # 2 words
U1 = Msg("user", "one two three")  # 3
A1 = Msg("assistant", "four five")  # 2
U2 = Msg("user", "six")  # 1
PATH = [SYSTEM, U1, A1, U2]


def test_everything_is_kept_when_it_fits_exactly() -> None:
    assert fit_window(PATH, cost(2, 3, 2, 1), words) == PATH
    assert context_tokens(PATH, words) == cost(2, 3, 2, 1)


def test_oldest_non_system_messages_are_dropped_first() -> None:
    assert fit_window(PATH, cost(2, 3, 2, 1) - 1, words) == [SYSTEM, A1, U2]
    assert fit_window(PATH, cost(2, 1), words) == [SYSTEM, U2]


def test_system_messages_are_kept_in_place_even_over_budget() -> None:
    late_system = Msg("system", "now answer in French")
    path = [SYSTEM, U1, late_system, A1, U2]
    assert fit_window(path, cost(2, 4, 2, 1), words) == [SYSTEM, late_system, A1, U2]
    assert fit_window(path, 0, words) == [SYSTEM, late_system]


def test_the_kept_run_is_contiguous_so_there_is_no_hole() -> None:
    big = Msg("assistant", " ".join(["w"] * 50))
    path = [U1, big, U2]
    # U1 alone would still fit after U2, but skipping `big` would leave a hole.
    assert fit_window(path, cost(1, 3), words) == [U2]


def test_a_newest_message_that_does_not_fit_is_left_out_too() -> None:
    path = [SYSTEM, Msg("user", " ".join(["w"] * 100))]
    window = fit_window(path, cost(2, 10), words)
    assert window == [SYSTEM]
    assert window[-1:] != path[-1:]  # how a caller notices


def test_empty_path_gives_empty_window() -> None:
    assert fit_window([], 100, words) == []
