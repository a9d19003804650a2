"""Fixtures for the SAM application shell: template.yaml, its transform, the SAM CLI venv, the layer build.

The SAM CLI lives in its own venv (.venv-sam, `make sam`). `make test` makes it first (mk/sam.mk adds it
as a prerequisite of `test`); a bare `pytest` run makes it here through the same make target, so a fresh
clone needs no manual step (the first install takes about a minute).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.template.samshell import ROOT, TEMPLATE, sam_env
from tools.local_invoke import load_template


@pytest.fixture(scope="session")
def template() -> dict[str, Any]:
    """template.yaml as a dict, short-form tags in long form (the loader tools/local_invoke.py uses)."""
    return load_template(TEMPLATE)


@pytest.fixture(scope="session")
def resources(template: dict[str, Any]) -> dict[str, Any]:
    return dict(template["Resources"])


@pytest.fixture(scope="session")
def transformed(template: dict[str, Any]) -> dict[str, Any]:
    """The CloudFormation that the SAM transform produces (local CodeUri/ContentUri/DefinitionUri -> S3)."""
    from tests.template.iam_record import transform

    return transform(template)


@pytest.fixture(scope="session")
def sam_cli() -> Path:
    """The SAM CLI executable, installed by `make .venv-sam/.installed` if needed."""
    subprocess.run(["make", "-s", "--no-print-directory", ".venv-sam/.installed"], cwd=ROOT, check=True)
    return ROOT / ".venv-sam" / "bin" / "sam"


@pytest.fixture(scope="session")
def sam_build(sam_cli: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`make build` into a temporary build dir (exercises the make target and its PATH handling)."""
    build_dir = tmp_path_factory.mktemp("sam") / "build"
    result = subprocess.run(
        ["make", "-s", "--no-print-directory", "build", f"SAM_BUILD_DIR={build_dir}"],
        cwd=ROOT,
        env=sam_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return build_dir


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """stepchain's wheel, built from a clean copy of the sources (no build/ or egg-info left over from
    earlier builds, which could hide a missing package-data entry)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp / "dist"), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:]
    [built] = (tmp / "dist").glob("stepchain-*.whl")
    return built
