"""Fixtures for the SAM application shell: template.yaml, its transform, the SAM CLI venv, the layer build.

The SAM CLI lives in its own venv (.venv-sam, `make sam`). `make test` makes it first (mk/sam.mk adds it
as a prerequisite of `test`); a bare `pytest` run makes it here through the same make target, so a fresh
clone needs no manual step (the first install takes about a minute).
"""

from __future__ import annotations

import subprocess
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
