"""training/rewards."""
