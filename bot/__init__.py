"""repbot's bot: configuration, the command line, chat commands, the monitor, rendering and transports."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("repbot")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
