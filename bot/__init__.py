"""repbot's bot: configuration, the command line, chat commands, the monitor, rendering and transports."""

from typing import Any


def __getattr__(name: str) -> Any:
    # importlib.metadata costs ~15 ms at start-up; only `repbot --version` and the metrics need the version.
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("repbot")
        except PackageNotFoundError:  # running from a source tree that was never installed
            return "0.0.0+source"
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
