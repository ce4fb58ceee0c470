"""core/agents."""
