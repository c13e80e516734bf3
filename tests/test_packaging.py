"""Packaging: what the sdist and the wheel ship (package data, the licence), and that
building them is quiet (no setuptools warnings)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from email.parser import Parser
from pathlib import Path

import pytest

from wallet_proxy.version import __version__

ROOT = Path(__file__).resolve().parent.parent
# What a build needs besides the package: all that deploy/Dockerfile copies too.
BUILD_FILES = ("setup.cfg", "pyproject.toml", "MANIFEST.in", "README.md", "LICENSE")
LICENCE = "Apache-2.0"


@dataclass
class Built:
    source: Path
    sdist: Path
    wheel: Path
    output: str


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Built:
    """`python -m build` of a clean copy of the sources: the sdist, then the wheel built
    from the sdist (so the sdist must hold everything the wheel needs)."""
    directory = tmp_path_factory.mktemp("packaging")
    source = directory / "source"
    shutil.copytree(
        ROOT / "wallet_proxy",
        source / "wallet_proxy",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    for name in BUILD_FILES:
        shutil.copy(ROOT / name, source / name)
    build = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", directory / "dist", "."],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (sdist,) = (directory / "dist").glob("wallet_proxy-*.tar.gz")
    (wheel,) = (directory / "dist").glob("wallet_proxy-*.whl")
    return Built(source, sdist, wheel, build.stdout + build.stderr)


@pytest.mark.slow
def test_the_wheel_ships_templates_and_static_files_without_build_warnings(built):
    """setuptools warns when data folders aren't declared the way it wants (30 lines each)."""
    warnings = re.findall(r"\b\w*Warning\b.*", built.output)
    assert warnings == []
    shipped = set(zipfile.ZipFile(built.wheel).namelist())
    data = {
        path.relative_to(built.source).as_posix()
        for path in (built.source / "wallet_proxy").rglob("*")
        if path.is_file() and path.suffix != ".py"
    }
    assert any(name.startswith("wallet_proxy/templates/") for name in data)
    assert any(name.startswith("wallet_proxy/support/static/") for name in data)
    assert data <= shipped


def _metadata(text: str) -> dict[str, list[str]]:
    fields: dict[str, list[str]] = {}
    for name, value in Parser().parsestr(text, headersonly=True).items():
        fields.setdefault(name, []).append(value)
    return fields


@pytest.mark.slow
def test_the_wheel_and_the_sdist_carry_the_apache_licence(built):
    """PEP 639: the licence as an SPDX expression and its file beside the metadata; no
    licence classifier (setuptools refuses one beside the expression)."""
    licence = (ROOT / "LICENSE").read_text()
    assert licence.split()[:4] == ["Apache", "License", "Version", "2.0,"]

    wheel = zipfile.ZipFile(built.wheel)
    info = f"wallet_proxy-{__version__}.dist-info"
    metadata = _metadata(wheel.read(f"{info}/METADATA").decode())
    assert metadata["License-Expression"] == [LICENCE]
    assert metadata["License-File"] == ["LICENSE"]
    assert not any(c.startswith("License ::") for c in metadata.get("Classifier", []))
    assert wheel.read(f"{info}/licenses/LICENSE").decode() == licence

    with tarfile.open(built.sdist) as sdist:
        top = f"wallet_proxy-{__version__}"
        pkg_info = _metadata(sdist.extractfile(f"{top}/PKG-INFO").read().decode())
        assert pkg_info["License-Expression"] == [LICENCE]
        assert sdist.extractfile(f"{top}/LICENSE").read().decode() == licence


def test_the_changelog_starts_with_this_release():
    """A release is named in CHANGELOG.md before it ships: its newest heading is this version."""
    headings = re.findall(r"^## (\S+)", (ROOT / "CHANGELOG.md").read_text(), re.MULTILINE)
    assert headings and headings[0] == __version__
