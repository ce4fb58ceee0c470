"""training/export."""
