"""The design's two rooms stay apart, and `repbot check` loads only what it runs."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BOT_ONLY = {"bot", "nio", "tinydb", "apscheduler", "PIL", "prometheus_client"}


def _imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_checks_never_imports_the_bot_or_its_stack() -> None:
    offenders = {
        path.name: sorted(_imported_roots(path) & BOT_ONLY) for path in sorted((ROOT / "checks").rglob("*.py"))
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_repbot_check_does_not_load_the_matrix_stack() -> None:
    script = (
        "import sys, json\n"
        "import bot.cli, checks.runner, checks.runner, checks.runner\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    loaded = set(json.loads(done.stdout))
    assert loaded & {"nio", "tinydb", "apscheduler", "PIL", "prometheus_client", "aiosmtplib", "aioimaplib"} == set()
