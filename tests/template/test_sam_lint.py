"""template.yaml passes both linters: cfn-lint (project venv) and `sam validate --lint` (SAM CLI venv)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.template.samshell import ROOT, TEMPLATE, sam_env


def test_cfn_lint_passes() -> None:
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    result = subprocess.run([str(cfn_lint), str(TEMPLATE)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_sam_validate_lint_passes(sam_cli: Path) -> None:
    cmd = [str(sam_cli), "validate", "--lint", "--region", "us-east-1", "--template-file", str(TEMPLATE)]
    result = subprocess.run(cmd, cwd=ROOT, env=sam_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is a valid SAM Template" in result.stdout + result.stderr
