"""Start-up cost of dnspython: answer its one import-time feature probe without importlib.metadata.

`dns.name` asks `dns._features.have("idna")` when it is imported, and `dns._features` imports
`importlib.metadata` to read the installed idna's version: ~35 ms of a `repbot check` start-up
(`python -X importtime`), spent before the first query on every command. Here `importlib.metadata` is
loaded on first use (whoever needs it gets the real module then), and the probe is answered as dnspython
would answer it, from `idna.package_data.__version__` against dnspython's own requirement. Anything
unexpected leaves dnspython to probe as usual.
"""

from __future__ import annotations

import importlib
import sys
import types


def answer_feature_probe() -> None:
    """Make `import dns.name` cheap; a no-op when dnspython's probe is already done or looks different."""
    if "dns.name" in sys.modules:
        return
    _lazy_metadata()
    import dns._features as features

    requirements = getattr(features, "_requirements", {}).get("idna")
    if not isinstance(requirements, list) or "idna" in getattr(features, "_cache", {"idna": None}):
        return
    try:
        from idna.package_data import __version__ as installed
    except ImportError:
        features.force("idna", False)
        return
    if not all(isinstance(text, str) and text.startswith("idna>=") for text in requirements):
        return  # not the "idna>=VERSION" form this reads
    minimums = [text.removeprefix("idna>=") for text in requirements]
    features.force("idna", all(_version(installed) >= _version(minimum) for minimum in minimums))


def _lazy_metadata() -> None:
    """Put a stand-in for `importlib.metadata` in sys.modules that loads the real module on first use.

    (importlib.util.LazyLoader does not do here: the next `import importlib.metadata` reads the module's
    `__spec__`, which loads it at once.) The stand-in's `__spec__` is None; any other attribute loads the real
    module, which then replaces it in sys.modules and on the `importlib` package, and lends it its names.
    """
    if "importlib.metadata" in sys.modules:
        return
    stand_in = types.ModuleType("importlib.metadata", "Loaded on first use (checks.dns._startup).")
    stand_in.__spec__ = None

    def load(name: str) -> object:
        if sys.modules.get("importlib.metadata") is stand_in:
            del sys.modules["importlib.metadata"]
            if getattr(importlib, "metadata", None) is stand_in:
                del importlib.metadata
        real = importlib.import_module("importlib.metadata")
        stand_in.__dict__.update({key: value for key, value in vars(real).items() if key != "__getattr__"})
        del stand_in.__dict__["__getattr__"]
        return getattr(real, name)

    stand_in.__getattr__ = load  # type: ignore[method-assign]  # PEP 562: asked only for missing names
    sys.modules["importlib.metadata"] = stand_in
    importlib.metadata = stand_in  # `import importlib.metadata` binds this


def _version(text: str) -> tuple[int, ...]:
    """The leading numbers of a version, as dnspython compares them ("3.20" -> (3, 20))."""
    parts: list[int] = []
    for part in text.split("."):
        digits = ""
        for char in part:
            if not char.isdigit():
                break
            digits += char
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)
