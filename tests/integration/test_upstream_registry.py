"""Provider configuration: parsing env and file, defaults, lookup, and keeping keys secret."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.config import InvalidSetting, Providers
from service.domain.errors import InvalidRequest, UnknownProvider
from service.upstream import (
    ChatMessage,
    ChatRequest,
    EchoProvider,
    OllamaProvider,
    OpenAIProvider,
    Registry,
    parse_config,
    registry_config,
)
from tests.fakeupstream import FakeUpstream

KEY = "sk-live-DO-NOT-LEAK-77"

TOML = """
default_provider = "work"
default_model = "gpt-big"

[providers.work]
kind = "openai"
base_url = "https://llm.example.test/v1"
api_key_env = "WORK_KEY"
default_model = "gpt-small"
models = ["gpt-small", "gpt-big"]
timeouts = { connect = 1.5, read = 20, stream_max = 120 }
retry_attempts = 5

[providers.local]
kind = "ollama"
base_url = "http://127.0.0.1:11434"
default_model = "llama3.2"
"""


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


def test_echo_alone_is_the_default_with_no_configuration() -> None:
    config = parse_config({})
    assert list(config.providers) == ["echo"]
    assert config.default_provider == "echo"
    registry = Registry.from_config(config)
    provider, model = registry.resolve(None, None)
    assert isinstance(provider, EchoProvider) and model == "echo"


def test_env_vars_configure_openai_and_ollama() -> None:
    config = parse_config(
        {
            "CONVTREE_OPENAI_BASE_URL": "http://vllm.test/v1",
            "CONVTREE_OPENAI_API_KEY": KEY,
            "CONVTREE_OPENAI_MODEL": "qwen",
            "CONVTREE_OPENAI_MODELS": "qwen, mistral",
            "CONVTREE_OLLAMA_BASE_URL": "http://ollama.test:11434",
            "CONVTREE_DEFAULT_PROVIDER": "ollama",
        }
    )
    openai = config.providers["openai"]
    assert (openai.kind, openai.base_url, openai.default_model, openai.models) == (
        "openai",
        "http://vllm.test/v1",
        "qwen",
        ("qwen", "mistral"),
    )
    assert openai.api_key is not None and openai.api_key.reveal() == KEY
    assert config.providers["ollama"].base_url == "http://ollama.test:11434"
    assert config.default_provider == "ollama"
    assert set(config.providers) == {"openai", "ollama", "echo"}


def test_a_single_configured_provider_becomes_the_default() -> None:
    config = parse_config({"CONVTREE_OPENAI_API_KEY": KEY})
    assert config.default_provider == "openai"
    assert config.providers["openai"].base_url == "https://api.openai.com/v1"


def test_toml_file_with_key_from_env_timeouts_and_defaults() -> None:
    config = parse_config({"WORK_KEY": KEY}, TOML, "toml")
    work = config.providers["work"]
    assert work.api_key is not None and work.api_key.reveal() == KEY
    assert (work.http.connect, work.http.read, work.http.write, work.http.stream_max) == (
        1.5,
        20.0,
        10.0,
        120.0,
    )
    assert work.retry.attempts == 5
    assert config.default_provider == "work"
    assert config.default_model == "gpt-big"
    assert set(config.providers) == {"work", "local", "echo"}


def test_json_file_is_read_the_same_way() -> None:
    text = json.dumps({"providers": {"box": {"kind": "ollama", "base_url": "http://box.test"}}})
    config = parse_config({}, text, "json")
    assert config.providers["box"].kind == "ollama"
    assert config.default_provider == "box"


def test_env_overrides_a_file_provider_of_the_same_name() -> None:
    text = '[providers.openai]\nkind = "openai"\nbase_url = "http://file.test/v1"\ndefault_model = "a"\n'
    config = parse_config({"CONVTREE_OPENAI_BASE_URL": "http://env.test/v1"}, text)
    assert config.providers["openai"].base_url == "http://env.test/v1"
    assert config.providers["openai"].default_model == "a"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[providers.x]\nkind = "gemini"\n', "Invalid enum value 'gemini'"),
        ('[providers.x]\nkind = "openai"\nbase_ur = "typo"\n', "base_ur"),
        ('[providers.x]\nkind = "openai"\napi_key_env = "MISSING_KEY"\n', "MISSING_KEY is not set"),
        ('default_provider = "ghost"\n', "'ghost' is not configured"),
        ("not toml at all [", "invalid providers file"),
    ],
)
def test_invalid_configuration_fails_at_startup(text: str, message: str) -> None:
    with pytest.raises(InvalidSetting, match=message):
        parse_config({}, text)


def test_a_bad_key_value_is_not_echoed_in_the_config_error() -> None:
    text = f'[providers.x]\nkind = "openai"\napi_key = ["{KEY}"]\n'
    with pytest.raises(InvalidSetting) as caught:
        parse_config({}, text)
    assert KEY not in str(caught.value)


def test_keys_never_appear_in_reprs() -> None:
    config = parse_config({"WORK_KEY": KEY, "CONVTREE_OLLAMA_API_KEY": KEY}, TOML)
    registry = Registry.from_config(config)
    for shown in (
        repr(config),
        str(config),
        repr(registry),
        *(repr(registry.get(n)) for n in registry.names()),
    ):
        assert KEY not in shown
    assert "Secret('***')" in repr(config)
    asyncio.run(registry.aclose())


def test_get_returns_the_named_or_default_provider_and_rejects_unknown_names() -> None:
    registry = Registry.from_config(parse_config({"WORK_KEY": KEY}, TOML))
    assert isinstance(registry.get("local"), OllamaProvider)
    assert isinstance(registry.get(None), OpenAIProvider) and registry.get(None).name == "work"
    assert isinstance(registry.get("echo"), EchoProvider)
    with pytest.raises(UnknownProvider) as caught:
        registry.get("nope")
    assert caught.value.context == {"provider": "nope"}
    asyncio.run(registry.aclose())


def test_resolve_fills_in_defaults_and_enforces_the_model_list() -> None:
    registry = Registry.from_config(parse_config({"WORK_KEY": KEY}, TOML))
    assert registry.resolve(None, None)[1] == "gpt-big"  # the global default model
    assert registry.resolve("work", "gpt-small")[1] == "gpt-small"
    assert registry.resolve("local", None)[1] == "llama3.2"  # the provider's own default
    assert registry.resolve("local", "anything")[1] == "anything"  # no list, no limit
    with pytest.raises(InvalidRequest, match="not offered"):
        registry.resolve("work", "gpt-other")
    with pytest.raises(UnknownProvider):
        registry.resolve("ghost", "m")
    asyncio.run(registry.aclose())


def test_resolve_without_any_default_model_asks_for_one() -> None:
    registry = Registry.from_config(parse_config({"CONVTREE_OPENAI_API_KEY": KEY}))
    with pytest.raises(InvalidRequest, match="no default model"):
        registry.resolve("openai", None)


def test_the_file_named_in_env_is_read(tmp_path: Path) -> None:
    path = tmp_path / "providers.json"
    path.write_text(json.dumps({"providers": {"box": {"kind": "ollama", "base_url": "http://box.test"}}}))
    config = registry_config(Providers.from_env({"CONVTREE_PROVIDERS_FILE": str(path)}))
    assert "box" in config.providers
    with pytest.raises(InvalidSetting, match="cannot read"):
        Providers.from_env({"CONVTREE_PROVIDERS_FILE": str(tmp_path / "missing.toml")})


def test_registry_streams_through_a_configured_provider_and_closes_clients(fake: FakeUpstream) -> None:
    config = parse_config(
        {"CONVTREE_OLLAMA_BASE_URL": fake.ollama_url, "CONVTREE_OLLAMA_MODEL": "fake-small"}
    )

    async def go() -> str:
        registry = Registry.from_config(config)
        provider, model = registry.resolve(None, None)
        request = ChatRequest(model, [ChatMessage("user", "ping")])
        text = "".join([getattr(i, "text", "") async for i in provider.stream(request)])
        await registry.aclose()
        assert provider._client.is_closed  # type: ignore[attr-defined]
        return text

    assert asyncio.run(go()) == "Hello from fake-small. You said: ping"
