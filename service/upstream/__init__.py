"""Model providers behind one small Protocol: OpenAI-compatible, Ollama and the offline `echo`."""

from service.upstream.base import (
    ChatMessage,
    ChatParams,
    ChatRequest,
    Finished,
    HttpSettings,
    Provider,
    ReasoningDelta,
    RefusalDelta,
    RetryPolicy,
    Said,
    StreamItem,
    TextDelta,
    ToolCallDelta,
)
from service.upstream.echo import EchoProvider
from service.upstream.ollama import OllamaProvider
from service.upstream.openai import OpenAIProvider
from service.upstream.registry import (
    ProviderConfig,
    Registry,
    RegistryConfig,
    parse_config,
    registry_config,
)

__all__ = [
    "ChatMessage",
    "ChatParams",
    "ChatRequest",
    "EchoProvider",
    "Finished",
    "HttpSettings",
    "OllamaProvider",
    "OpenAIProvider",
    "Provider",
    "ProviderConfig",
    "Registry",
    "RegistryConfig",
    "ReasoningDelta",
    "RefusalDelta",
    "RetryPolicy",
    "Said",
    "StreamItem",
    "TextDelta",
    "ToolCallDelta",
    "parse_config",
    "registry_config",
]
