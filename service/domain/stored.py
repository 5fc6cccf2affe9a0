"""A message's body as the store keeps it: its text (message.body_of), with every large binary part
moved out of line, by digest, and the limits a body is held to.

Out of line: the base64 payload of a known part, `image_url.url` when it is a `data:` URL,
`input_audio.data` and `file.file_data`, when it holds at least `OUT_OF_LINE_CHARS` characters, is
kept once per tenant by the SHA-256 of its UTF-8 text (table `blobs`), and the body holds in its
place a reference, the object `{"blob_sha256": "<hex>"}`. A message check()ed holds a string in
each of these places, never an object, so a reference is never mistaken for what a client sent.
The event's digest covers the body's text with its references, and each reference names its
payload's SHA-256: the chain still proves every byte. A read puts each payload back (`restore`).

Limits (413 `message-too-large` beyond them, naming the field): a part's payload at most
`MAX_PART_CHARS`; the body's text, with its references, at most `MAX_INLINE_CHARS` (a string
content's own limit); the body with its payloads at most `MAX_BODY_CHARS`.

U+0000: the API refuses it in every string of a request (service/api/bodies.py), a body's included.
A JSON body spells any character it holds as JSON does, a NUL as the escape `\u0000`, which
PostgreSQL's text keeps as six characters: a body that holds one (brought by an import, say) is
stored and read back like any other, and no SQL ever looks into a body's JSON.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from typing import Any

import msgspec

from service.domain.errors import MessageTooLarge
from service.domain.events import MessageAppended
from service.domain.message import Body, Utterance, body_of

OUT_OF_LINE_CHARS = 16 * 1024  # 16 KiB of base64 (12 KiB of data) and more: out of line
MAX_PART_CHARS = 8 * 1024 * 1024  # one part's payload
MAX_INLINE_CHARS = 1_000_000  # a body's text as stored, references in place of payloads
MAX_BODY_CHARS = 12 * 1024 * 1024  # a message's body with its payloads

REFERENCE = "blob_sha256"

# (part type, the object holding the payload, the payload's key)
_PAYLOADS = (("image_url", "image_url", "url"), ("input_audio", "input_audio", "data"), ("file", "file", "file_data"))


class Stored(msgspec.Struct, frozen=True):
    """A body as stored: `text` (the event's digest covers it), whether it is JSON, and the payloads
    it references, by SHA-256."""

    text: str
    json: bool = False
    blobs: dict[bytes, str] = {}


def blob_digest(payload: str) -> bytes:
    return hashlib.sha256(payload.encode()).digest()


def _slot(part: Any) -> tuple[dict[str, Any], str] | None:
    """The object and key holding a known part's payload, if `part` is one such part."""
    if not isinstance(part, dict):
        return None
    for kind, holder, key in _PAYLOADS:
        if part.get("type") == kind:
            inner = part.get(holder)
            if isinstance(inner, dict) and key in inner:
                return inner, key
    return None


def stored(message: Utterance) -> Stored:
    """The body `message` is stored as, its large payloads out of line. Raises MessageTooLarge
    beyond the limits."""
    content = message.content
    blobs: dict[bytes, str] = {}
    total = 0
    if isinstance(content, list):
        moved: list[Any] = []
        for index, part in enumerate(content):
            slot = _slot(part)
            payload = None if slot is None else slot[0][slot[1]]
            if slot is None or not isinstance(payload, str):
                moved.append(part)
                continue
            if len(payload) > MAX_PART_CHARS:
                raise MessageTooLarge(
                    f"content[{index}]: a part's payload is at most {MAX_PART_CHARS} characters.",
                    field=f"content[{index}]",
                )
            is_data_url = part["type"] != "image_url" or payload.startswith("data:")
            if len(payload) < OUT_OF_LINE_CHARS or not is_data_url:
                moved.append(part)
                continue
            digest = blob_digest(payload)
            total += len(payload) if digest not in blobs else 0
            blobs[digest] = payload
            holder, key = slot
            moved.append(_replaced(part, holder, key, {REFERENCE: digest.hex()}))
        if blobs:
            message = msgspec.structs.replace(message, content=moved)
    body = body_of(message)
    if len(body.text) > MAX_INLINE_CHARS:
        raise MessageTooLarge(
            f"The message's body is at most {MAX_INLINE_CHARS} characters besides its large binary parts.",
            field="content",
        )
    if total + len(body.text) > MAX_BODY_CHARS:
        raise MessageTooLarge(f"A message's body is at most {MAX_BODY_CHARS} characters.", field="content")
    return Stored(body.text, body.json, blobs)


def _replaced(part: dict[str, Any], holder: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """`part` (not changed) with `holder[key]` set to `value`, every key in its place."""
    return {k: ({h: (value if h == key else w) for h, w in holder.items()} if v is holder else v) for k, v in part.items()}


def as_body(body: Stored) -> Body:
    return Body(body.text, body.json)


def references(content: Any) -> list[bytes]:
    """The digests the parts of a content read from a stored body refer to, in order."""
    found: list[bytes] = []
    if isinstance(content, list):
        for part in content:
            slot = _slot(part)
            if slot is not None:
                value = slot[0][slot[1]]
                if isinstance(value, dict) and isinstance(value.get(REFERENCE), str):
                    found.append(bytes.fromhex(value[REFERENCE]))
    return found


def restore(content: Any, blobs: dict[bytes, str]) -> None:
    """Put each referenced payload back into `content` (a content just decoded from a stored body,
    which no one else holds yet: changed in place). A payload not in `blobs` stays a reference."""
    if not isinstance(content, list):
        return
    for part in content:
        slot = _slot(part)
        if slot is None:
            continue
        holder, key = slot
        value = holder[key]
        if isinstance(value, dict) and isinstance(value.get(REFERENCE), str):
            payload = blobs.get(bytes.fromhex(value[REFERENCE]))
            if payload is not None:
                holder[key] = payload


def stored_bodies(events: Iterable[object]) -> dict[uuid.UUID, Stored]:
    """The bodies of the message events among `events` (each holding what its message says), by
    message id: what a write stores beside them."""
    return {e.message_id: stored(e) for e in events if isinstance(e, MessageAppended)}

