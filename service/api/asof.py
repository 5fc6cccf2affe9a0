"""The `as_of` query parameter: which past state of a conversation a read returns."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated

import msgspec
from litestar.params import QueryParameter

from service.app.replay import AsOf
from service.domain.errors import InvalidRequest
from service.domain.events import MAX_SEQ


AsOfParameter = Annotated[
    str | None,
    QueryParameter(
        max_length=64,
        description="Read the conversation as it stood after this event: a global event sequence number "
        "(`seq`/`last_seq`), or an RFC 3339 timestamp with an offset (the newest of the conversation's events "
        "stamped at or before that instant). Before the conversation existed: 404.",
    ),
]

# RFC 3339 as msgspec reads it, with the offset it requires: a local time names no instant.
_Instant = Annotated[datetime, msgspec.Meta(tz=True)]


def parse_as_of(value: str | None) -> AsOf | None:
    if value is None:
        return None
    if value.isascii() and value.isdigit():
        seq = int(value)
        if seq <= MAX_SEQ:
            return seq
    else:
        if value[-6:-5] == " ":
            # An unencoded `+` in a query string arrives as a space: "…T12:00:00 02:00" means +02:00.
            value = value[:-6] + "+" + value[-5:]
        try:
            instant = msgspec.convert(value, _Instant)
            # Read in UTC, as the database compares it: an offset can push a valid local time out of
            # the years a timestamp holds (0001-01-01T00:00:00+14:00 is in year 0).
            return instant.astimezone(timezone.utc)
        except (msgspec.ValidationError, OverflowError):
            pass
    raise InvalidRequest(
        "as_of must be an event sequence number or an RFC 3339 timestamp with an offset, such as 2025-01-31T12:00:00Z.",
        parameter="as_of",
    )
