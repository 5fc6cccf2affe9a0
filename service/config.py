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
    # The role that owns the tables and migrates them (and runs rebuild and vacuum); None: the
    # service's own DATABASE_URL does everything (and its role can switch the log's guards off).
    migrate_database_url: str | None = None
    # The role the service runs as on the embedded server (created and granted by `migrate`).
    service_role: str = "convtree_service"
    data_dir: Path = msgspec.field(default_factory=default_data_dir)
    host: str = "127.0.0.1"
    port: int = 8000
    pool_min_size: int = 2
    pool_max_size: int = 20
    # Every wait on the database is bounded (seconds; 0 lifts a bound, except the connect timeout's);
    # one that runs out answers 503 with Retry-After.
    database_connect_timeout: float = 5.0  # to open a connection
    pool_acquire_timeout: float = 5.0  # for a free connection of the pool
    lock_timeout: float = 5.0  # for a conversation's (or an Idempotency-Key's) lock
    statement_timeout: float = 30.0  # for any one statement
    idle_in_transaction_timeout: float = 60.0  # before the database ends a transaction left idle
    key_cache_seconds: float = 10.0  # how long a revoked key may still be honoured by a running server
    request_max_body_bytes: int = 16 * 1024 * 1024
    request_max_header_bytes: int = 32 * 1024  # the request line and all headers together
    request_header_timeout_seconds: float = 10.0  # from connection (or a request's first byte) to its last header
    request_body_timeout_seconds: float = 60.0  # from the last header to the body's last byte
    keep_alive_timeout_seconds: int = 5  # how long an idle connection is kept between requests
    reply_lease_seconds: float = 60.0  # a reply whose server stops renewing it for this long is closed out
    reply_record_seconds: float = 10.0  # how long recording a finished reply is retried while the database is away
    # Replay runs (service/app/replay_runs): a run replays at most replay_max_turns user turns (a
    # longer path is a 422: start further down it); a tenant has at most replay_runs_per_tenant
    # runs running at once across all processes (the others wait, queued); each process runs at
    # most replay_workers at once; a run whose process stops renewing its lease for
    # replay_lease_seconds is resumed by another; idle processes look for runs every
    # replay_poll_seconds; a batch replays at most replay_batch_max conversations.
    replay_max_turns: int = 200
    replay_runs_per_tenant: int = 2
    replay_workers: int = 4
    replay_lease_seconds: float = 30.0
    replay_poll_seconds: float = 1.0
    replay_batch_max: int = 1000
    sse_keepalive_seconds: float = 15.0  # a stream silent this long gets a `: keep-alive` comment
    log_level: str = "info"  # info: a line per request; warning: only failures
    log_format: str = "auto"  # auto: readable on a terminal, JSON lines otherwise; or json, console
    metrics: bool = True  # /metrics in Prometheus's format
    metrics_port: int | None = None  # None: /metrics on the API's port; else on this one (same host)
    metrics_token: str | None = None  # None: /metrics is open; else it needs `Authorization: Bearer <token>`
    cors_origins: tuple[str, ...] = ()  # origins whose pages may call the API (comma-separated)
    gzip_min_bytes: int = 1024  # responses at least this large are gzipped for clients that accept it; 0: never

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
                raw[field] = [v.strip() for v in value.split(",") if v.strip()] if field in _LISTS else value
        # msgspec converts and validates ("8000" -> 8000, a bad number -> a clear error).
        return msgspec.convert(raw, cls, strict=False, dec_hook=_decode)


_LISTS = {"cors_origins"}


def _decode(kind: type, value: object) -> object:
    if kind is Path and isinstance(value, str):
        return Path(value)
    raise NotImplementedError(kind)
