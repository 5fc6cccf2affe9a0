"""The message: what one says (role, text, metadata), defined once and extended by every other shape.

Commands (tree.Append), the event (events.MessageAppended), the read model (views.Message), the
context a model is shown (ContextItem) and the upstream request (upstream.base.ChatRequest) all
subclass `Utterance`, so a field added here reaches each of them; only the edges convert (an API
body to a command: one function per door; a ChatRequest to a provider's wire format: one per
provider).

Adding a field (the next ones: content parts, `tool_calls`, `tool_call_id`, `name`, reasoning):
give it a default that means "absent" (`msgspec.UNSET`, or None) so that
- an event's payload written before the field existed keeps its bytes and its hash
  (events.encode_message_payload writes a field only when it is set);
- a read model without it encodes as it did (views.Message omits defaults).

Empty `content` is legal here: a later field (tool calls) may carry the message. Where non-empty
text is still required today, and must be relaxed when such a field arrives:
- the REST bodies: `service/api/schemas.py` `Content` (min_length=1);
- the OpenAI door: `service/api/openai_compat.py` (refuses a message without text);
- the body row: `schema/schema.sql` `bodies.content NOT NULL` (an empty string is stored, not NULL);
- the digest: `events.body_digest` hashes the text alone, so a field carried beside it must be
  hashed too (the next issue hashes the message's canonical JSON).
"""

from __future__ import annotations

import functools
import uuid
from typing import Any, Literal, TypeVar

import msgspec

Role = Literal["system", "user", "assistant", "tool"]


class Utterance(msgspec.Struct, frozen=True):
    """What a message says: who says it, the text, and the caller's metadata (any JSON object).

    The text of a message in the log is its body, stored apart and recorded by digest; every other
    field is written into its event's payload (events.encode_message_payload)."""

    role: Role
    content: str
    metadata: dict[str, Any] = {}


# The fields of an Utterance that have columns or a table of their own, not a place in the payload.
OWN_COLUMNS = ("role", "content")


class ContextItem(Utterance, frozen=True, kw_only=True):
    """A message as a model is shown it: its id (recorded in the reply's generation) and what it says."""

    id: uuid.UUID


def said(message: Utterance) -> dict[str, Any]:
    """What `message` (an Utterance, or any shape extending one) says, as the fields to build another
    shape from: the one copy of a message's fields from shape to shape."""
    return {name: getattr(message, name) for name in Utterance.__struct_fields__}


def context_item(message_id: uuid.UUID, message: Utterance) -> ContextItem:
    """`message`, as a model is shown it."""
    return ContextItem(**said(message), id=message_id)


S = TypeVar("S", bound=msgspec.Struct)


def carried(shape: type[S], source: msgspec.Struct, **given: Any) -> S:
    """A `shape` built from the fields of `source` (any struct: a wire body, a command) that `shape`
    also has, by name, and the `given` ones: an edge's one conversion, so that a field both shapes
    carry crosses it without the edge naming it. A field `source` lacks takes `shape`'s default."""
    fields = {name: getattr(source, name) for name in _shared(shape, type(source)) if name not in given}
    return shape(**fields, **given)


@functools.cache
def _shared(shape: type[msgspec.Struct], source: type[msgspec.Struct]) -> tuple[str, ...]:
    """The fields `shape` and `source` both have, in `shape`'s order."""
    return tuple(name for name in shape.__struct_fields__ if name in source.__struct_fields__)
