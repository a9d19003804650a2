"""One layer Makefile for the repository and for projects made by ``stepchain new`` (issue 17): the
repository's layers/stepchain/Makefile is the package's project template file, and its switch picks where
the stepchain wheel comes from. Dry runs (``make -n``): no pip, no network."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "src" / "stepchain" / "deploy" / "project_template" / "layers" / "stepchain" / "Makefile"


def _dry_run(layer_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "-n", "--no-print-directory", "build-StepchainLayer", "ARTIFACTS_DIR=/nonexistent", *args],
        cwd=layer_dir, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_the_repository_and_the_scaffold_share_one_layer_makefile() -> None:
    repo = ROOT / "layers" / "stepchain" / "Makefile"
    assert repo.is_symlink() and repo.resolve() == TEMPLATE.resolve()


def test_the_wheel_comes_from_the_variable_then_vendor_then_the_sources(tmp_path: Path) -> None:
    in_repo = _dry_run(ROOT / "layers" / "stepchain")
    assert in_repo.returncode == 0, in_repo.stderr
    assert "pip wheel" in in_repo.stdout  # the repository: built from a copy of its sources

    layer = tmp_path / "project" / "layers" / "stepchain"
    layer.mkdir(parents=True)
    shutil.copy(TEMPLATE, layer / "Makefile")
    missing = _dry_run(layer)
    assert missing.returncode != 0 and "no stepchain wheel: set STEPCHAIN_WHEEL" in missing.stderr

    (tmp_path / "project" / "vendor").mkdir()
    (tmp_path / "project" / "vendor" / "stepchain-9.9-py3-none-any.whl").write_bytes(b"")
    vendored = _dry_run(layer)
    assert vendored.returncode == 0 and "vendor/stepchain-9.9-py3-none-any.whl" in vendored.stdout
    given = _dry_run(layer, "STEPCHAIN_WHEEL=/elsewhere/stepchain-1.0-py3-none-any.whl")
    assert "/elsewhere/stepchain-1.0-py3-none-any.whl" in given.stdout and "vendor/" not in given.stdout
