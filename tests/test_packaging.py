"""Packaging: what a wheel ships, and that building it is quiet (no setuptools warnings)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_wheel_ships_templates_and_static_files_without_build_warnings(tmp_path):
    """setuptools warns when data folders aren't declared the way it wants (30 lines each)."""
    source = tmp_path / "source"
    shutil.copytree(
        ROOT / "wallet_proxy",
        source / "wallet_proxy",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    for name in ("setup.cfg", "pyproject.toml", "MANIFEST.in", "README.md"):
        shutil.copy(ROOT / name, source / name)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", tmp_path / "dist", "."],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    warnings = re.findall(r"\b\w*Warning\b.*", build.stdout + build.stderr)
    assert warnings == []
    (wheel,) = (tmp_path / "dist").glob("wallet_proxy-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    data = {
        path.relative_to(source).as_posix()
        for path in (source / "wallet_proxy").rglob("*")
        if path.is_file() and path.suffix != ".py"
    }
    assert any(name.startswith("wallet_proxy/templates/") for name in data)
    assert any(name.startswith("wallet_proxy/support/static/") for name in data)
    assert data <= shipped
