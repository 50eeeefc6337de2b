"""The design's rooms stay apart, and `repbot check` loads only what it runs.

The rules are read from the source (AST), over every module of the tree, so a new module is covered the day it
lands. Imports inside functions count too: a lazy import still runs.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bot", "checks", "bench", "tests")
BOT_ONLY = {"bot", "nio", "tinydb", "apscheduler", "PIL", "prometheus_client"}


@dataclass(frozen=True)
class Import:
    """One import statement's target: `module` always, `name` for `from module import name`."""

    importer: str
    module: str
    name: str | None
    line: int


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def _modules() -> dict[str, Path]:
    return {_module_name(path): path for root in PACKAGES for path in sorted((ROOT / root).rglob("*.py"))}


def _is_package(module: str) -> bool:
    return (ROOT / Path(*module.split(".")) / "__init__.py").exists()


def _package_of(module: str) -> str:
    return module if _is_package(module) else module.rpartition(".")[0]


def _absolute(importer: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = _package_of(importer).split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


@cache
def _imports(module: str) -> tuple[Import, ...]:
    found: list[Import] = []
    for node in ast.walk(ast.parse(_modules()[module].read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [Import(module, alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, node)
            found += [Import(module, source, alias.name, node.lineno) for alias in node.names]
    return tuple(found)


def _targets(item: Import) -> Iterator[str]:
    """The project modules an import loads: the module, its parent packages, and `from pkg import submodule`."""
    parts = item.module.split(".")
    for end in range(1, len(parts) + 1):
        yield ".".join(parts[:end])
    if item.name is not None:
        yield f"{item.module}.{item.name}"


def _edges(module: str) -> set[str]:
    modules = _modules()
    return {target for item in _imports(module) for target in _targets(item) if target in modules}


def _chain_to(start: str, forbidden: str) -> list[str] | None:
    """The shortest import chain from `start` into the `forbidden` package, or None."""
    parents: dict[str, str | None] = {start: None}
    queue = [start]
    while queue:
        current = queue.pop(0)
        for target in sorted(_edges(current)):
            if target in parents:
                continue
            parents[target] = current
            if target == forbidden or target.startswith(forbidden + "."):
                chain = [target]
                while (step := parents[chain[-1]]) is not None:
                    chain.append(step)
                return chain[::-1]
            queue.append(target)
    return None


def _external_roots(module: str) -> set[str]:
    return {item.module.split(".")[0] for item in _imports(module) if item.module}


def test_checks_never_imports_the_bot_or_its_stack() -> None:
    offenders = {
        module: sorted(_external_roots(module) & BOT_ONLY) for module in _modules() if module.startswith("checks")
    }
    assert {module: found for module, found in offenders.items() if found} == {}


def test_transports_never_import_checks_even_through_bot_modules() -> None:
    transports = [module for module in _modules() if module.startswith("bot.transports")]
    assert transports, "no transport modules found: has bot/transports moved?"
    chains = {module: _chain_to(module, "checks") for module in transports}
    assert {module: " -> ".join(chain) for module, chain in chains.items() if chain} == {}


def _private_part(item: Import) -> bool:
    words = [*item.module.split("."), *([item.name] if item.name else [])]
    # `_` alone is gettext's translate function (bot.i18n), public by a convention older than Python's.
    return any(word.startswith("_") and not word.startswith("__") and word != "_" for word in words)


def _owner(item: Import) -> str:
    """The package the private thing belongs to: the module's package, or the package itself."""
    for end in range(len(item.module.split(".")), 0, -1):
        prefix = ".".join(item.module.split(".")[:end])
        if prefix in _modules() and not prefix.rpartition(".")[2].startswith("_"):
            return _package_of(prefix)
    return _package_of(item.module)


def test_no_module_imports_another_packages_private_name() -> None:
    # tests/ may pin a package's private helpers (a parser's internals); the rule guards the seams between packages.
    offenders = [
        f"{item.importer}:{item.line} imports {item.module}{'.' + item.name if item.name else ''}"
        for module in _modules()
        if not module.startswith("tests")
        for item in _imports(module)
        if item.module.split(".")[0] in PACKAGES and _private_part(item) and _owner(item) != _package_of(module)
    ]
    assert offenders == []


def test_the_rules_see_a_violation() -> None:
    # The graph walk must find a chain that exists, or the tests above pass by seeing nothing.
    assert _chain_to("bot.cli", "checks") is not None
    item = Import("bot.app", "checks.dns.resolver", "_private", 1)
    assert _private_part(item) and _owner(item) == "checks.dns"
    own = Import("checks.dns.resolver", "checks.dns._wire", "parse", 1)
    assert _private_part(own) and _owner(own) == "checks.dns"


def test_repbot_check_does_not_load_the_matrix_stack() -> None:
    script = (
        "import sys, json\n"
        "import bot.cli, checks.runner\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    loaded = set(json.loads(done.stdout))
    assert loaded & {"nio", "tinydb", "apscheduler", "PIL", "prometheus_client", "aiosmtplib", "aioimaplib"} == set()


def test_a_config_without_optional_sections_loads_none_of_their_code() -> None:
    script = (
        "import sys, json\n"
        "from bot.config.loader import parse_config\n"
        "config = parse_config({'monitor': {'ips': ['192.0.2.1']}})\n"
        "assert config.canary is None and config.snds is None\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    loaded = set(json.loads(done.stdout))
    assert loaded & {"bot.config.canary", "bot.config.providers", "httpx", "aiosmtplib", "aioimaplib"} == set()
