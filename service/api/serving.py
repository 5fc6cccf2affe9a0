"""Serving the app with uvicorn, with a shutdown that lets replies being generated end cleanly.

uvicorn's graceful shutdown waits for open responses, then cancels them, and tells the app only
afterwards (lifespan shutdown). A streamed reply can last minutes, so it would be cut off
mid-event. This server tells the app as soon as shutdown begins: running replies get most of the
grace period to finish, then are interrupted, each recorded as it stood and its stream ended
with a final event, while the rest of the grace period is left for that. Followers of the event
feed are told at once too: a long-poll answers with what it has, a stream ends with a final event,
so that they hold up no shutdown and an idle process exits at once.
"""

from __future__ import annotations

import socket
import sys

import uvicorn
from litestar import Litestar

from service.api.connections import uvicorn_limits
from service.config import Settings

STARTUP_FAILURE = 3  # uvicorn's exit code when the server could not start


def finish_reserve(grace: float) -> float:
    """Of the grace period, the part kept for recording interrupted replies and ending their streams."""
    return min(3.0, grace / 2)


class Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: Litestar) -> None:
        super().__init__(config)
        self._app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        services = getattr(self._app.state, "services", None)
        if services is not None:
            services.events.close()  # long-polls answer now, streams end with a last event: nothing waits for them
            grace = float(self.config.timeout_graceful_shutdown or 0)
            services.turns.drain(after=grace - finish_reserve(grace))
        await super().shutdown(sockets)


def serve(app: Litestar, settings: Settings, *, host: str, port: int, grace: float = 10.0) -> None:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        access_log=False,  # convtree writes its own line per request (service.api.observe)
        log_config=None,  # uvicorn's records go through the process's logging, rendered as convtree's
        timeout_graceful_shutdown=int(grace),
        **uvicorn_limits(settings),
    )
    server = Server(config, app)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    if not server.started:
        sys.exit(STARTUP_FAILURE)
