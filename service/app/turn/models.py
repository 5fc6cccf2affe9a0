"""The models a turn may ask for: which provider a model name means, and which models there are."""

from __future__ import annotations

import asyncio

from service.domain.errors import ModelNotFound, UpstreamError
from service.upstream import Provider, Registry

MODELS_TIMEOUT = 5.0  # a provider that cannot list its models this fast is listed by its configuration


def resolve_model(registry: Registry, name: str) -> tuple[Provider, str]:
    """`provider/model`, or a bare model name: the provider offering it (the default one first)."""
    prefix, slash, rest = name.partition("/")
    if slash and prefix in registry.names():
        return registry.resolve(prefix, rest or None)
    offering = [n for n, c in registry.config.providers.items() if name in c.models]
    if not offering or registry.config.default_provider in offering:
        return registry.resolve(None, name)
    return registry.resolve(min(offering), name)


async def list_models(registry: Registry) -> list[tuple[str, str]]:
    """(provider, model) for every configured provider: its allow-list when it has one, else what
    it lists itself (or its default model, when it cannot be asked)."""

    async def of(name: str) -> list[str]:
        config = registry.config.providers.get(name)
        if config is not None and config.models:
            return list(config.models)
        fallback = [config.default_model] if config is not None and config.default_model else []
        try:
            return await asyncio.wait_for(registry.get(name).list_models(), MODELS_TIMEOUT) or fallback
        except (UpstreamError, TimeoutError):
            return fallback

    names = registry.names()
    listed = await asyncio.gather(*(of(n) for n in names))
    return [(name, model) for name, models in zip(names, listed, strict=True) for model in models]


async def find_model(registry: Registry, name: str) -> tuple[str, str]:
    """(provider, model) that `name` means, as a turn resolves it, when that provider lists it."""
    provider, model = resolve_model(registry, name)
    if (provider.name, model) not in await list_models(registry):
        raise ModelNotFound(f"model {name!r} not found", model=name)
    return provider.name, model
