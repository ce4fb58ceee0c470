"""Memory-R1 Desktop: the Qt GUI and the `memory-r1` command line (the only place that wires
core/ and training/ together). The training stack is imported lazily, only by the commands
that train or export."""
