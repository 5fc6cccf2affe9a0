"""Settings: read from the environment once at start-up, then passed down as one frozen value."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import msgspec
import platformdirs


def default_data_dir() -> Path:
    """The user's data directory, so that every command finds the same database from anywhere."""
    return Path(platformdirs.user_data_dir("convtree", appauthor=False))


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    database_url: str | None = None  # None: run the embedded PostgreSQL in data_dir
    data_dir: Path = msgspec.field(default_factory=default_data_dir)
    host: str = "127.0.0.1"
    port: int = 8000
    pool_min_size: int = 2
    pool_max_size: int = 20
    key_cache_seconds: float = 10.0  # how long a revoked key may still be honoured by a running server
    request_max_body_bytes: int = 16 * 1024 * 1024

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
