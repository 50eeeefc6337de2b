"""Chat commands: the registry, and one module of handlers per family."""
