"""core/assistant."""
