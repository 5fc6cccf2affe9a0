"""convtree: an event-sourced conversation store for LLM chats."""
