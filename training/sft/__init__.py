"""Supervised fine-tuning (the warm start before GRPO, issue 16)."""
