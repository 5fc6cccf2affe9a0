"""Which model providers exist: parsed once from env and a providers file, built into clients.

File (`CONVTREE_PROVIDERS_FILE`, `.toml` or `.json`), TOML shown:

    default_provider = "openai"          # optional
    default_model = "gpt-4o-mini"        # optional; else the default provider's default_model

    [providers.openai]
    kind = "openai"                      # openai | ollama | echo
    base_url = "https://api.openai.com/v1"
    api_key_env = "OPENAI_API_KEY"       # or api_key = "..." (prefer the env indirection)
    default_model = "gpt-4o-mini"
    models = ["gpt-4o-mini", "gpt-4o"]   # non-empty = the only models this provider may serve
    timeouts = { connect = 5, read = 60, write = 10, pool = 5, stream_max = 600 }

Env vars add or override providers named `openai` / `ollama`: CONVTREE_OPENAI_BASE_URL,
CONVTREE_OPENAI_API_KEY, CONVTREE_OPENAI_MODEL, CONVTREE_OPENAI_MODELS (comma separated) and the
same with OLLAMA; CONVTREE_DEFAULT_PROVIDER / CONVTREE_DEFAULT_MODEL override the defaults.
`echo` is always present. Without an explicit default the only configured non-echo provider is
the default, else `echo`.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import httpx
import msgspec

from service.domain.errors import InvalidRequest, UnknownProvider
from service.upstream.base import HttpSettings, Provider, RetryPolicy
from service.upstream.echo import EchoProvider
from service.upstream.ollama import OllamaProvider
from service.upstream.openai import OpenAIProvider

Kind = Literal["openai", "ollama", "echo"]
DEFAULT_BASE_URLS: dict[str, str] = {
    "openai": "https://api.openai.com/v1",
    "ollama": "http://127.0.0.1:11434",
}


class ProviderConfigError(ValueError):
    """The providers configuration is invalid (a startup error, never a request error)."""


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


class ProviderConfig(msgspec.Struct, frozen=True):
    name: str
    kind: Kind
    base_url: str | None = None
    api_key: Secret | None = None
    default_model: str | None = None
    models: tuple[str, ...] = ()
    http: HttpSettings = HttpSettings()
    retry: RetryPolicy = RetryPolicy()


class RegistryConfig(msgspec.Struct, frozen=True):
    providers: dict[str, ProviderConfig]
    default_provider: str
    default_model: str | None = None


# The raw file shape, decoded strictly so a typo'd key fails at startup instead of being ignored.
class _Timeouts(msgspec.Struct, forbid_unknown_fields=True):
    connect: float | None = None
    read: float | None = None
    write: float | None = None
    pool: float | None = None
    stream_max: float | None = None
    max_connections: int | None = None


class _Entry(msgspec.Struct, forbid_unknown_fields=True):
    kind: Kind
    base_url: str | None = None
    api_key: str | None = None
    api_key_env: str | None = None
    default_model: str | None = None
    models: list[str] = []
    timeouts: _Timeouts | None = None
    retry_attempts: int | None = None


class _File(msgspec.Struct, forbid_unknown_fields=True):
    providers: dict[str, _Entry] = {}
    default_provider: str | None = None
    default_model: str | None = None


def _decode_file(text: str, fmt: Literal["toml", "json"]) -> _File:
    try:
        if fmt == "toml":
            return msgspec.convert(tomllib.loads(text), _File)
        return msgspec.json.decode(text, type=_File)
    except (tomllib.TOMLDecodeError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        # msgspec names the path and the expected type; it quotes values only for enum fields
        # (kind), never for free strings such as api_key, so no key can leak.
        raise ProviderConfigError(f"invalid providers file: {exc}") from None


def _http_settings(t: _Timeouts | None) -> HttpSettings:
    if t is None:
        return HttpSettings()
    given = {k: v for k, v in msgspec.structs.asdict(t).items() if v is not None}
    return msgspec.structs.replace(HttpSettings(), **given)


def _from_entry(name: str, e: _Entry, env: Mapping[str, str]) -> ProviderConfig:
    if e.api_key and e.api_key_env:
        raise ProviderConfigError(f"provider {name!r}: give api_key or api_key_env, not both")
    key = e.api_key
    if e.api_key_env:
        key = env.get(e.api_key_env)
        if not key:
            raise ProviderConfigError(f"provider {name!r}: env var {e.api_key_env} is not set")
    if e.kind != "echo" and not (e.base_url or e.kind in DEFAULT_BASE_URLS):
        raise ProviderConfigError(f"provider {name!r}: base_url is required")
    retry = RetryPolicy() if e.retry_attempts is None else RetryPolicy(attempts=max(1, e.retry_attempts))
    return ProviderConfig(
        name=name,
        kind=e.kind,
        base_url=e.base_url or DEFAULT_BASE_URLS.get(e.kind),
        api_key=Secret(key) if key else None,
        default_model=e.default_model,
        models=tuple(e.models),
        http=_http_settings(e.timeouts),
        retry=retry,
    )


def _apply_env(
    kind: Literal["openai", "ollama"], env: Mapping[str, str], entry: _Entry | None
) -> _Entry | None:
    prefix = f"CONVTREE_{kind.upper()}_"
    fields = {
        "base_url": env.get(prefix + "BASE_URL"),
        "api_key": env.get(prefix + "API_KEY"),
        "default_model": env.get(prefix + "MODEL"),
    }
    models = env.get(prefix + "MODELS")
    if not any(fields.values()) and models is None:
        return entry
    merged = entry or _Entry(kind=kind)
    changes: dict[str, str | list[str] | None] = {k: v for k, v in fields.items() if v}
    if changes.get("api_key"):
        changes["api_key_env"] = None  # the env var replaces whatever key the file named
    if models is not None:
        changes["models"] = [m.strip() for m in models.split(",") if m.strip()]
    return msgspec.structs.replace(merged, **changes)


def parse_config(
    env: Mapping[str, str], file_text: str | None = None, file_format: Literal["toml", "json"] = "toml"
) -> RegistryConfig:
    """Pure: the registry configuration from an environment mapping and the providers file's text."""
    raw = _decode_file(file_text, file_format) if file_text is not None else _File()
    entries = dict(raw.providers)
    for kind in ("openai", "ollama"):
        entry = _apply_env(kind, env, entries.get(kind))
        if entry is not None:
            entries[kind] = entry
    providers = {name: _from_entry(name, e, env) for name, e in entries.items()}
    providers.setdefault(
        "echo", ProviderConfig(name="echo", kind="echo", default_model="echo", models=("echo",))
    )

    default = env.get("CONVTREE_DEFAULT_PROVIDER") or raw.default_provider
    if default is None:
        others = [n for n in providers if n != "echo"]
        default = others[0] if len(others) == 1 else "echo"
    if default not in providers:
        raise ProviderConfigError(f"default provider {default!r} is not configured")
    return RegistryConfig(
        providers=providers,
        default_provider=default,
        default_model=env.get("CONVTREE_DEFAULT_MODEL") or raw.default_model,
    )


def load_config(env: Mapping[str, str] | None = None) -> RegistryConfig:
    """Read `CONVTREE_PROVIDERS_FILE` (if set) and parse it with the environment."""
    env = os.environ if env is None else env
    path = env.get("CONVTREE_PROVIDERS_FILE")
    if not path:
        return parse_config(env)
    fmt: Literal["toml", "json"] = "json" if path.endswith(".json") else "toml"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ProviderConfigError(f"cannot read providers file {path}: {exc.strerror}") from None
    return parse_config(env, text, fmt)


def build_provider(config: ProviderConfig, *, transport: httpx.AsyncBaseTransport | None = None) -> Provider:
    if config.kind == "echo":
        return EchoProvider(config.name)
    assert config.base_url is not None  # _from_entry guarantees it for http kinds
    cls = OpenAIProvider if config.kind == "openai" else OllamaProvider
    return cls(
        config.name,
        config.base_url,
        api_key=config.api_key.reveal() if config.api_key else None,
        http=config.http,
        retry=config.retry,
        transport=transport,
    )


class Registry:
    """The configured providers by name; owns their HTTP clients until `aclose()`."""

    def __init__(self, config: RegistryConfig, providers: Mapping[str, Provider]) -> None:
        self.config = config
        self._providers = dict(providers)

    @classmethod
    def from_config(
        cls, config: RegistryConfig, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> Registry:
        """Build every provider; `transport` (tests) is shared by all HTTP providers."""
        return cls(config, {n: build_provider(c, transport=transport) for n, c in config.providers.items()})

    def __repr__(self) -> str:
        return f"Registry(providers={sorted(self._providers)!r}, default={self.config.default_provider!r})"

    def names(self) -> list[str]:
        return sorted(self._providers)

    def get(self, name: str | None = None) -> Provider:
        key = name or self.config.default_provider
        try:
            return self._providers[key]
        except KeyError:
            raise UnknownProvider(f"no model provider named {key!r} is configured", provider=key) from None

    def resolve(self, provider: str | None, model: str | None) -> tuple[Provider, str]:
        """The provider and model to use for a turn, filling in defaults and checking the allow-list."""
        chosen = self.get(provider)
        config = self.config.providers[chosen.name] if chosen.name in self.config.providers else None
        if model is None:
            if chosen.name == self.config.default_provider and self.config.default_model:
                model = self.config.default_model
            elif config is not None and config.default_model:
                model = config.default_model
            elif config is not None and config.models:
                model = config.models[0]
        if not model:
            raise InvalidRequest(
                f"provider {chosen.name!r} has no default model; name one", provider=chosen.name
            )
        if config is not None and config.models and model not in config.models:
            raise InvalidRequest(
                f"model {model!r} is not offered by provider {chosen.name!r}",
                provider=chosen.name,
                model=model,
            )
        return chosen, model

    async def aclose(self) -> None:
        """Close every provider's client, even if closing one of them fails."""
        errors: list[BaseException] = []
        for provider in self._providers.values():
            try:
                await provider.aclose()
            except Exception as exc:  # noqa: BLE001 - collected and re-raised below
                errors.append(exc)
        if errors:
            raise errors[0]
