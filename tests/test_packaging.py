"""The built wheel installs into a fresh venv and `repbot` runs from there, with its data files inside.

Kept fast and offline-safe: the wheel is built from a copy of the source (nothing lands in the tree),
without build isolation when the build backend is at hand, and installed with `--no-deps` into a venv
that sees the current environment's packages through a .pth file, so nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _backend_at_hand() -> bool:
    """True when setuptools can build a wheel here without fetching anything."""
    if importlib.util.find_spec("setuptools") is None:
        return False
    import setuptools

    major, minor = (int(part) for part in setuptools.__version__.split(".")[:2])
    return importlib.util.find_spec("wheel") is not None or (major, minor) >= (70, 1)


def _run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def _build_wheel(tmp_path: Path) -> Path:
    source = tmp_path / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("bot", "checks"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    flags = ["--no-build-isolation"] if _backend_at_hand() else []  # else pip fetches setuptools for the build
    wheels = tmp_path / "wheels"
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", *flags, "-w", wheels, source, cwd=tmp_path)
    (wheel,) = wheels.glob("repbot-*.whl")
    return wheel


def _fresh_venv(tmp_path: Path) -> Path:
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    purelib = _run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=tmp_path).stdout.strip()
    # The dependencies come from this environment (appended after the venv's own site-packages), not the network.
    ours = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib"), *site.getsitepackages()}
    (Path(purelib) / "_repbot_test_deps.pth").write_text("\n".join(sorted(p for p in ours if Path(p).is_dir())))
    return venv


def test_the_wheel_installs_and_runs_in_a_fresh_venv(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    assert {"checks/dnsbl/zones.toml", "checks/canary/ndr.toml", "bot/cli.py", "bot/timeline.py"} <= set(names)
    assert "bot/config.example.toml" in names  # the README says to edit from it: it must come with the wheel
    assert "bot/locale/es/LC_MESSAGES/repbot.mo" in names  # the compiled catalogs: gettext reads only .mo
    assert not any(name.startswith("tests/") for name in names)
    venv = _fresh_venv(tmp_path)
    python = venv / "bin" / "python"
    _run(
        sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel, cwd=tmp_path
    )
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    repbot = venv / "bin" / "repbot"
    assert _run(repbot, "--version", cwd=tmp_path).stdout.strip() == f"repbot {version}"
    assert "TARGET" in _run(repbot, "check", "--help", cwd=tmp_path).stdout
    where = _run(python, "-c", "import bot, checks.dnsbl.lookup; print(bot.__file__)", cwd=tmp_path).stdout
    assert where.startswith(str(venv)), where  # the installed copy, not the source tree
    zones = _run(
        python,
        "-c",
        "import importlib.resources as r; print(len(r.files('checks.dnsbl').joinpath('zones.toml').read_text()))",
        cwd=tmp_path,
    )
    assert int(zones.stdout) > 1000
    example = _run(repbot, "config", "example", cwd=tmp_path).stdout
    assert example == (ROOT / "config.example.toml").read_text(encoding="utf-8")
