"""The integration lane's fixtures: a real PostgreSQL, convtree served over HTTP, the fake model server."""

from tests.postgres import databases
from tests.servers import (
    api,
    model_api,
    model_key,
    model_server,
    ollama_client,
    openai_alias_client,
    openai_client,
    server,
    upstream,
    upstream_server,
)

__all__ = [
    "api",
    "databases",
    "model_api",
    "model_key",
    "model_server",
    "ollama_client",
    "openai_alias_client",
    "openai_client",
    "server",
    "upstream",
    "upstream_server",
]
