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

    def __post_init__(self) -> None:
        if self.log_level.upper() not in _LOG_LEVELS:
            raise ValueError(f"log_level: expected one of {', '.join(n.lower() for n in _LOG_LEVELS)}")
        if self.log_format not in _LOG_FORMATS:
            raise ValueError(f"log_format: expected one of {', '.join(_LOG_FORMATS)}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """CONVTREE_* variables (and DATABASE_URL) override the defaults; a value that does not
        convert is an InvalidSetting naming its variable."""
        env = os.environ if env is None else env
        raw: dict[str, str | list[str]] = {}
        names: dict[str, str] = {}
        if env.get("DATABASE_URL"):
            raw["database_url"] = env["DATABASE_URL"]
            names["database_url"] = "DATABASE_URL"
        for field in cls.__struct_fields__:
            name = f"CONVTREE_{field.upper()}"
            value = env.get(name)
            if value:
                raw[field] = [v.strip() for v in value.split(",") if v.strip()] if field in _LISTS else value
                names[field] = name
        # msgspec converts and validates ("8000" -> 8000, "abc" -> an error naming `$.port`).
        try:
            return msgspec.convert(raw, cls, strict=False, dec_hook=_decode)
        except msgspec.ValidationError as exc:
            raise InvalidSetting.of(exc, raw, names) from exc


class InvalidSetting(msgspec.ValidationError):
    """A CONVTREE_* variable holds a value convtree cannot use."""

    @classmethod
    def of(cls, exc: msgspec.ValidationError, raw: Mapping[str, object], names: Mapping[str, str]) -> InvalidSetting:
        reason, _, where = str(exc).partition(" - at `$.")
        if where:  # a conversion: "Expected `int`, got `str` - at `$.port`"
            field = where.split("`")[0].split(".")[0].split("[")[0]
        else:  # a check of __post_init__: "log_level: expected one of …"
            field, _, reason = reason.partition(": ")
        reason = reason[:1].lower() + reason[1:]
        if field not in names:
            return cls(f"invalid settings: {reason}")
        value = raw[field]
        shown = repr(",".join(value) if isinstance(value, list) else value)
        if "url" in field or "token" in field:  # may hold a password: never printed
            shown = "…"
        return cls(f"{names[field]}={shown} is not valid for {field.replace('_', ' ')}: {reason}")


_LISTS = {"cors_origins"}
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_LOG_FORMATS = ("auto", "json", "console")


def _decode(kind: type, value: object) -> object:
    if kind is Path and isinstance(value, str):
        return Path(value)
    raise NotImplementedError(kind)
