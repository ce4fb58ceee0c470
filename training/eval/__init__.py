"""training/eval."""
