"""Which model providers exist: built into clients from the settings' `Providers`.

What is configured, and how (the variables and the providers file), is `service.config`'s: read
and checked once at start-up. This module turns it into each provider's client settings
(`RegistryConfig`, `registry_config`) and the clients themselves (`Registry`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import httpx
import msgspec

from service.config import ProviderKind, Providers, ProviderSettings, ProviderTimeouts, Secret
from service.domain.errors import InvalidRequest, UnknownProvider
from service.upstream.base import HttpSettings, Provider, RetryPolicy
from service.upstream.echo import EchoProvider
from service.upstream.ollama import OllamaProvider
from service.upstream.openai import OpenAIProvider

__all__ = ["ProviderConfig", "Registry", "RegistryConfig", "Secret", "parse_config", "registry_config"]

DEFAULT_BASE_URLS: dict[str, str] = {
    "openai": "https://api.openai.com/v1",
    "ollama": "http://127.0.0.1:11434",
}


class ProviderConfig(msgspec.Struct, frozen=True):
    name: str
    kind: ProviderKind
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


def registry_config(providers: Providers) -> RegistryConfig:
    """The client settings of each configured provider: its kind's usual address when it names
    none, and the HTTP limits and retries it sets over the clients' defaults."""
    return RegistryConfig(
        providers={p.name: _provider_config(p) for p in providers.providers},
        default_provider=providers.default_provider,
        default_model=providers.default_model,
    )


def parse_config(
    env: Mapping[str, str], file_text: str | None = None, file_format: Literal["toml", "json"] = "toml"
) -> RegistryConfig:
    """Pure: the registry configuration from a mapping of variables and a providers file's text,
    as `Settings.from_env` reads them (an unusable value is its InvalidSetting)."""
    return registry_config(Providers.parse(env, file_text, file_format))


def _provider_config(p: ProviderSettings) -> ProviderConfig:
    retry = RetryPolicy() if p.retry_attempts is None else RetryPolicy(attempts=max(1, p.retry_attempts))
    return ProviderConfig(
        name=p.name,
        kind=p.kind,
        base_url=p.base_url or DEFAULT_BASE_URLS.get(p.kind),
        api_key=p.api_key,
        default_model=p.default_model,
        models=p.models,
        http=_http_settings(p.timeouts),
        retry=retry,
    )


def _http_settings(t: ProviderTimeouts) -> HttpSettings:
    given = {k: v for k, v in msgspec.structs.asdict(t).items() if v is not None}
    return msgspec.structs.replace(HttpSettings(), **given)


def build_provider(config: ProviderConfig, *, transport: httpx.AsyncBaseTransport | None = None) -> Provider:
    if config.kind == "echo":
        return EchoProvider(config.name)
    assert config.base_url is not None  # registry_config gives http kinds their usual address
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
