"""training/grpo."""
