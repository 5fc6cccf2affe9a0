"""Settings: read from the environment once at start-up, then passed down as one frozen value.

The model providers are part of it (`Providers`): the CONVTREE_OPENAI_* and CONVTREE_OLLAMA_*
variables, CONVTREE_DEFAULT_PROVIDER / CONVTREE_DEFAULT_MODEL, the file CONVTREE_PROVIDERS_FILE
names, and the variables that file names for its keys (`api_key_env`) are all read and checked
here, once; nothing reads them again while convtree runs.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

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
    # A reply's progress is checkpointed (and relayed to its client) in batches at most this often.
    reply_checkpoint_seconds: float = 0.1
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
    providers: Providers = msgspec.field(default_factory=lambda: Providers())  # the model providers

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
            if field == "providers":  # variables of their own, read by Providers.from_env
                continue
            name = f"CONVTREE_{field.upper()}"
            value = env.get(name)
            if value:
                raw[field] = [v.strip() for v in value.split(",") if v.strip()] if field in _LISTS else value
                names[field] = name
        # msgspec converts and validates ("8000" -> 8000, "abc" -> an error naming `$.port`).
        try:
            settings = msgspec.convert(raw, cls, strict=False, dec_hook=_decode)
        except msgspec.ValidationError as exc:
            raise InvalidSetting.of(exc, raw, names) from exc
        return msgspec.structs.replace(settings, providers=Providers.from_env(env))


class InvalidSetting(msgspec.ValidationError):
    """A CONVTREE_* variable (or the providers file it names) holds a value convtree cannot use."""

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
        return cls.naming(names[field], shown, field.replace("_", " "), reason)

    @classmethod
    def naming(cls, variable: str, shown: str, what: str, reason: str) -> InvalidSetting:
        """The one line that names the variable, its value (as fit to print) and what is wrong."""
        return cls(f"{variable}={shown} is not valid for {what}: {reason}")


_LISTS = {"cors_origins"}
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_LOG_FORMATS = ("auto", "json", "console")


def _decode(kind: type, value: object) -> object:
    if kind is Path and isinstance(value, str):
        return Path(value)
    raise NotImplementedError(kind)


# --- Model providers ---------------------------------------------------------------------------
#
# The providers file (CONVTREE_PROVIDERS_FILE, `.toml` or `.json`), TOML shown:
#
#     default_provider = "openai"          # optional
#     default_model = "gpt-4o-mini"        # optional; else the default provider's default_model
#
#     [providers.openai]
#     kind = "openai"                      # openai | ollama | echo
#     base_url = "https://api.openai.com/v1"
#     api_key_env = "OPENAI_API_KEY"       # or api_key = "..." (prefer the env indirection)
#     default_model = "gpt-4o-mini"
#     models = ["gpt-4o-mini", "gpt-4o"]   # non-empty = the only models this provider may serve
#     timeouts = { connect = 5, read = 60, write = 10, pool = 5, stream_max = 600 }
#     retry_attempts = 3
#
# Variables add or override the providers named `openai` / `ollama`: CONVTREE_OPENAI_BASE_URL,
# CONVTREE_OPENAI_API_KEY, CONVTREE_OPENAI_MODEL, CONVTREE_OPENAI_MODELS (comma separated; set but
# empty, it lifts the file's list, or configures the provider with its defaults alone) and the same
# with OLLAMA; CONVTREE_DEFAULT_PROVIDER / CONVTREE_DEFAULT_MODEL override the defaults. `echo` is
# always present. Without an explicit default the only configured non-echo provider is the
# default, else `echo`. An unset or empty variable is not a setting (but for *_MODELS).

PROVIDERS_FILE = "CONVTREE_PROVIDERS_FILE"
ProviderKind = Literal["openai", "ollama", "echo"]


class Secret:
    """An API key that never shows itself in repr, str, logs or tracebacks' locals."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class ProviderTimeouts(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A provider's HTTP limits as configured (seconds; None: the client's default)."""

    connect: float | None = None
    read: float | None = None
    write: float | None = None
    pool: float | None = None
    stream_max: float | None = None
    max_connections: int | None = None


class ProviderSettings(msgspec.Struct, frozen=True, kw_only=True):
    """One model provider: the file's entry with the variables applied and its key read."""

    name: str
    kind: ProviderKind
    base_url: str | None = None  # None: the kind's usual address
    api_key: Secret | None = None
    default_model: str | None = None
    models: tuple[str, ...] = ()  # non-empty: the only models this provider may serve
    timeouts: ProviderTimeouts = ProviderTimeouts()
    retry_attempts: int | None = None  # None: the client's default


ECHO = ProviderSettings(name="echo", kind="echo", default_model="echo", models=("echo",))


class Providers(msgspec.Struct, frozen=True, kw_only=True):
    """The model providers, in the order configured (the file's, then the variables', then echo)."""

    providers: tuple[ProviderSettings, ...] = (ECHO,)
    default_provider: str = "echo"
    default_model: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Providers:
        """The variables, and the file CONVTREE_PROVIDERS_FILE names (read now, once)."""
        path = env.get(PROVIDERS_FILE)
        if not path:
            return cls.parse(env)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidSetting.naming(
                PROVIDERS_FILE, repr(path), "providers file", f"cannot read it: {exc.strerror}"
            ) from None
        return cls.parse(env, text, "json" if path.endswith(".json") else "toml", path)

    @classmethod
    def parse(
        cls,
        env: Mapping[str, str],
        file_text: str | None = None,
        file_format: Literal["toml", "json"] = "toml",
        file_name: str | None = None,
    ) -> Providers:
        """Pure: the providers from the variables in `env` and the providers file's text (named
        `file_name` in the errors). An unusable value is an InvalidSetting naming where it is."""

        def in_file(reason: str) -> InvalidSetting:
            if file_name is None:
                return InvalidSetting(f"invalid providers file: {reason}")
            return InvalidSetting.naming(PROVIDERS_FILE, repr(file_name), "providers file", reason)

        raw = _decode_file(file_text, file_format, in_file) if file_text is not None else _File()
        entries = dict(raw.providers)
        for name, entry in entries.items():
            if entry.base_url is not None and not _is_http_url(entry.base_url):
                raise in_file(f"provider {name!r}: base_url: {_NOT_HTTP}")
        for kind in ("openai", "ollama"):
            applied = _apply_env(kind, env, entries.get(kind))
            if applied is not None:
                entries[kind] = applied
        providers = [_resolved(name, e, env, in_file) for name, e in entries.items()]
        if all(p.name != "echo" for p in providers):
            providers.append(ECHO)

        default = env.get("CONVTREE_DEFAULT_PROVIDER")
        names = [p.name for p in providers]
        if default and default not in names:
            reason = f"no provider named {default!r} is configured"
            raise InvalidSetting.naming("CONVTREE_DEFAULT_PROVIDER", repr(default), "default provider", reason)
        default = default or raw.default_provider
        if default is None:
            others = [n for n in names if n != "echo"]
            default = others[0] if len(others) == 1 else "echo"
        if default not in names:
            raise in_file(f"default provider {default!r} is not configured")
        return cls(
            providers=tuple(providers),
            default_provider=default,
            default_model=env.get("CONVTREE_DEFAULT_MODEL") or raw.default_model,
        )


# The file's shape, decoded strictly so a typo'd key fails at start-up instead of being ignored.
class _Entry(msgspec.Struct, forbid_unknown_fields=True):
    kind: ProviderKind
    base_url: str | None = None
    api_key: str | None = None
    api_key_env: str | None = None
    default_model: str | None = None
    models: list[str] = []
    timeouts: ProviderTimeouts | None = None
    retry_attempts: int | None = None


class _File(msgspec.Struct, forbid_unknown_fields=True):
    providers: dict[str, _Entry] = {}
    default_provider: str | None = None
    default_model: str | None = None


_NOT_HTTP = "expected an http:// or https:// URL"


def _is_http_url(url: str) -> bool:
    scheme, sep, rest = url.partition("://")
    return bool(sep) and scheme.lower() in ("http", "https") and bool(rest)


def _decode_file(text: str, fmt: Literal["toml", "json"], in_file: Callable[[str], InvalidSetting]) -> _File:
    try:
        if fmt == "toml":
            return msgspec.convert(tomllib.loads(text), _File)
        return msgspec.json.decode(text, type=_File)
    except tomllib.TOMLDecodeError as exc:
        raise in_file(f"not TOML: {exc}") from None
    except msgspec.DecodeError as exc:  # ValidationError included
        # msgspec names the path and the expected type; it quotes values only for enum fields
        # (kind), never for free strings such as api_key, so no key can leak.
        raise in_file(str(exc)) from None


def _apply_env(kind: Literal["openai", "ollama"], env: Mapping[str, str], entry: _Entry | None) -> _Entry | None:
    prefix = f"CONVTREE_{kind.upper()}_"
    fields = {
        "base_url": env.get(prefix + "BASE_URL"),
        "api_key": env.get(prefix + "API_KEY"),
        "default_model": env.get(prefix + "MODEL"),
    }
    models = env.get(prefix + "MODELS")  # set but empty: no list (lifts the file's)
    if not any(fields.values()) and models is None:
        return entry
    if fields["base_url"] and not _is_http_url(fields["base_url"]):
        raise InvalidSetting.naming(prefix + "BASE_URL", "…", f"{kind} base url", _NOT_HTTP)
    merged = entry or _Entry(kind=kind)
    changes: dict[str, str | list[str] | None] = {k: v for k, v in fields.items() if v}
    if changes.get("api_key"):
        changes["api_key_env"] = None  # the variable replaces whatever key the file named
    if models is not None:
        changes["models"] = [m.strip() for m in models.split(",") if m.strip()]
    return msgspec.structs.replace(merged, **changes)


def _resolved(
    name: str, e: _Entry, env: Mapping[str, str], in_file: Callable[[str], InvalidSetting]
) -> ProviderSettings:
    if e.api_key and e.api_key_env:
        raise in_file(f"provider {name!r}: give api_key or api_key_env, not both")
    key = e.api_key
    if e.api_key_env:
        key = env.get(e.api_key_env)  # read now: the key is the one set at start
        if not key:
            raise in_file(f"provider {name!r}: env var {e.api_key_env} is not set")
    return ProviderSettings(
        name=name,
        kind=e.kind,
        base_url=e.base_url,
        api_key=Secret(key) if key else None,
        default_model=e.default_model,
        models=tuple(e.models),
        timeouts=e.timeouts or ProviderTimeouts(),
        retry_attempts=e.retry_attempts,
    )
