"""Settings: read from the environment once at start-up, then passed down as one frozen value."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import msgspec


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    database_url: str | None = None  # None: run the embedded PostgreSQL in data_dir
    data_dir: Path = Path("data")
    host: str = "127.0.0.1"
    port: int = 8000
    pool_min_size: int = 2
    pool_max_size: int = 20
    key_cache_seconds: float = 10.0  # how long a revoked key may still be honoured by a running server
    request_max_body_bytes: int = 16 * 1024 * 1024
    reply_lease_seconds: float = 60.0  # a reply whose server stops renewing it for this long is closed out
    reply_record_seconds: float = 10.0  # how long recording a finished reply is retried while the database is away
    sse_keepalive_seconds: float = 15.0  # a stream silent this long gets a `: keep-alive` comment

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """CONVTREE_* variables (and DATABASE_URL) override the defaults."""
        env = os.environ if env is None else env
        raw: dict[str, str] = {}
        if env.get("DATABASE_URL"):
            raw["database_url"] = env["DATABASE_URL"]
        for field in cls.__struct_fields__:
            value = env.get(f"CONVTREE_{field.upper()}")
            if value:
                raw[field] = value
        # msgspec converts and validates ("8000" -> 8000, a bad number -> a clear error).
        return msgspec.convert(raw, cls, strict=False, dec_hook=_decode)


def _decode(kind: type, value: object) -> object:
    if kind is Path and isinstance(value, str):
        return Path(value)
    raise NotImplementedError(kind)
