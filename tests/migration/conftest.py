"""The migration lane's fixtures: a real PostgreSQL, and convtree served over HTTP on today's schema."""

from tests.postgres import databases
from tests.servers import api, server

__all__ = ["api", "databases", "server"]
