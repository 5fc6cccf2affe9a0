"""Counting a message's tokens: its text, parts, tool calls, results and images, by the documented rule."""

from __future__ import annotations

from service.domain.message import CustomCall, CustomToolCall, FunctionCall, FunctionToolCall, Utterance
from service.upstream.tokens import CALL_OVERHEAD, IMAGE_LOW_TOKENS, IMAGE_TOKENS, count_message, message_counter_for


def chars(text: str) -> int:
    return len(text)


def image(detail: str | None) -> dict[str, object]:
    url: dict[str, object] = {"url": "https://example.com/cat.png"}
    if detail is not None:
        url["detail"] = detail
    return {"type": "image_url", "image_url": url}


def test_a_string_content_counts_as_its_text() -> None:
    assert count_message(Utterance(role="user", content="abcd"), chars) == 4


def test_text_parts_count_and_images_count_by_the_fixed_rule() -> None:
    content = [{"type": "text", "text": "ab"}, image("low"), image("high"), image(None), {"type": "text", "text": "c"}]
    assert count_message(Utterance(role="user", content=content), chars) == 3 + IMAGE_LOW_TOKENS + 2 * IMAGE_TOKENS
    assert (IMAGE_LOW_TOKENS, IMAGE_TOKENS) == (85, 765)


def test_audio_and_file_parts_are_not_counted() -> None:
    content = [{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}, {"type": "file", "file": {"file_id": "f"}}]
    assert count_message(Utterance(role="user", content=content), chars) == 0


def test_tool_calls_count_their_names_and_arguments() -> None:
    calls = [
        FunctionToolCall(id="c1", function=FunctionCall(name="lookup", arguments='{"q":1}')),
        CustomToolCall(id="c2", custom=CustomCall(name="sh", input="ls")),
    ]
    message = Utterance(role="assistant", content=None, tool_calls=calls)
    assert count_message(message, chars) == len("lookup") + len('{"q":1}') + len("sh") + len("ls") + 2 * CALL_OVERHEAD


def test_a_tool_result_counts_its_text_and_the_id_it_answers() -> None:
    assert count_message(Utterance(role="tool", content="42", tool_call_id="call_1"), chars) == 2 + len("call_1")


def test_a_refusal_counts() -> None:
    assert count_message(Utterance(role="assistant", content=None, refusal="no"), chars) == 2


def test_a_model_counts_with_its_vocabulary() -> None:
    count = message_counter_for("gpt-4o")
    assert count(Utterance(role="user", content="hello world")) == 2
    assert count(Utterance(role="user", content=[image("low")])) == IMAGE_LOW_TOKENS
