"""Who is calling: the tenant every query is scoped to, the actor and request recorded in events."""

from __future__ import annotations

import msgspec


class Caller(msgspec.Struct, frozen=True):
    tenant: str
    actor: str  # the API key's name
    request_id: str | None = None
    auto_thread: bool = False  # the key's default for auto-threading (service/domain/threads.py)
