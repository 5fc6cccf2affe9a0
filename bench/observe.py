"""What the request log and the metrics cost one request, measured in this process: the wrapper
every request passes through (service/api/observe.py), around an app that answers at once, with
both on and with both off. No network, no database and no other process is in the measurement,
so a busy machine moves it little; set beside the server CPU per append of figure 1, it says
what share of an append they cost."""

from __future__ import annotations

import asyncio
import tempfile
import time
from typing import Any

from service.api.logs import RequestLog
from service.api.observe import Observer
from service.config import Settings

ROUTE = "/v1/conversations/{conversation_id}/messages"


async def _answer(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 201, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b"{}"})


async def _sent(message: Any) -> None:
    pass


async def _received() -> Any:
    return {"type": "http.request", "body": b"", "more_body": False}


def _scope() -> dict[str, Any]:
    return {
        "type": "http", "method": "POST", "path": "/v1/conversations/0191b1a2-0000-7000-8000-000000000000/messages",
        "headers": [(b"host", b"127.0.0.1"), (b"authorization", b"Bearer ct_x"), (b"content-type", b"application/json")],
        "state": {"tenant": "bench"}, "path_template": ROUTE,
        "path_params": {"conversation_id": "0191b1a2-0000-7000-8000-000000000000"},
    }  # fmt: skip


async def _per_request(app: Any, count: int) -> float:
    """CPU seconds per request; each request in a turn of the event loop of its own, as under load."""
    started = time.process_time()
    for _ in range(count):
        await app(_scope(), _received, _sent)
        await asyncio.sleep(0)
    return (time.process_time() - started) / count


async def observe_cost(count: int = 20_000, rounds: int = 5) -> tuple[float, float]:
    """Microseconds of CPU per request with the request log (JSON lines to a file) and metrics on,
    and with both off (the best of `rounds`, taken in turn)."""
    with tempfile.TemporaryFile("w") as out:
        apps = []
        for settings in (Settings(), Settings(log_level="warning", metrics=False)):
            apps.append(Observer(settings, RequestLog(settings.log_level, "json", out)).wrap(_answer))
        best = [float("inf"), float("inf")]
        for app in apps:
            await _per_request(app, count // 10)  # warm up
        for _ in range(rounds):
            for i, app in enumerate(apps):
                best[i] = min(best[i], await _per_request(app, count))
    return best[0] * 1e6, best[1] * 1e6
