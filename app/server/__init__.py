"""Servers that let other apps use the memory: MCP (stdio) and an OpenAI-compatible HTTP API."""
