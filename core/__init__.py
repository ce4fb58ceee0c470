"""Memory-R1 core: memory bank, model runtime, agents and pipeline. No Qt, no app, no training."""

__version__ = "0.1.0"
