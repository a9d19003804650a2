"""checkov (from PyPI, in its own venv: mk/checkov.mk) finds nothing in template.yaml beyond the skip list.

tests/template/checkov-skips.yaml names each check that fails on purpose, the resources it fails on and
why. The test runs checkov once, without skips, and compares: a failure not in the list fails the test,
and so does a listed (check, resource) that no longer fails (a skip that outlived its reason).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.template.samshell import ROOT, TEMPLATE

SKIPS = Path(__file__).with_name("checkov-skips.yaml")


@pytest.fixture(scope="session")
def checkov() -> Path:
    """The checkov executable, installed by `make .venv-checkov/.installed` if needed (~35 s, once)."""
    subprocess.run(["make", "-s", "--no-print-directory", ".venv-checkov/.installed"], cwd=ROOT, check=True)
    return ROOT / ".venv-checkov" / "bin" / "checkov"


@pytest.fixture(scope="session")
def skips() -> dict[str, dict[str, Any]]:
    doc: dict[str, dict[str, Any]] = yaml.safe_load(SKIPS.read_text())
    return doc


def test_every_skip_has_a_reason_and_resources(skips: dict[str, dict[str, Any]]) -> None:
    assert skips
    for check, entry in skips.items():
        assert check.startswith("CKV"), check
        assert set(entry) == {"reason", "resources"}, check
        assert isinstance(entry["reason"], str) and len(entry["reason"]) > 40, check
        assert entry["resources"] and all(isinstance(r, str) for r in entry["resources"]), check


def test_checkov_finds_only_the_justified_failures(checkov: Path, skips: dict[str, dict[str, Any]]) -> None:
    result = subprocess.run(
        [str(checkov), "--file", str(TEMPLATE), "--framework", "cloudformation", "--output", "json", "--quiet",
         "--compact", "--skip-download", "--no-fail-on-crash"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr[-4000:]  # 1: some check failed
    report = json.loads(result.stdout)
    report = report[0] if isinstance(report, list) else report
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["passed"] > 30  # it did scan the template
    failed = {(f["check_id"], f["resource"].rsplit(".", 1)[-1]) for f in report["results"]["failed_checks"]}
    allowed = {(check, res) for check, entry in skips.items() for res in entry["resources"]}
    assert failed - allowed == set(), "checkov failures that are not in checkov-skips.yaml"
    assert allowed - failed == set(), "skips in checkov-skips.yaml that checkov no longer reports"
