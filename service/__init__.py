"""convtree: an event-sourced conversation store for LLM chats."""

__version__ = "0.1.0"
