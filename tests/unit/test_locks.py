"""The lock files the venvs are installed from (make lock) agree with what the Makefiles pin."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def pinned(lock: Path, name: str) -> str:
    [version] = re.findall(rf"^{re.escape(name)}==(\S+)", lock.read_text(), flags=re.MULTILINE)
    return version


def test_the_scaffolds_sam_lock_is_the_repos() -> None:
    scaffold = ROOT / "src" / "stepchain" / "deploy" / "project_template" / "requirements-sam.lock"
    assert scaffold.read_text() == (ROOT / "requirements" / "sam.lock").read_text(), "run make lock"


def test_the_sam_cli_version_is_the_locked_one() -> None:
    locked = pinned(ROOT / "requirements" / "sam.lock", "aws-sam-cli")
    for makefile in (ROOT / "mk" / "sam.mk", ROOT / "src" / "stepchain" / "deploy" / "project_template" / "Makefile"):
        assert re.search(rf"^SAM_CLI_VERSION := {re.escape(locked)}$", makefile.read_text(), flags=re.MULTILINE), (
            makefile
        )


def test_the_localstack_lock_keeps_the_versions_the_plugins_target() -> None:
    lock = ROOT / "infra" / "localstack" / "requirements.lock"
    assert pinned(lock, "localstack-core") == "2026.3.0"
    constraints = dict(
        line.split("==", 1) for line in (ROOT / "infra" / "localstack" / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )  # fmt: skip
    assert pinned(lock, "boto3") == constraints["boto3"]


def test_the_dev_lock_installs_the_project_and_the_test_tools() -> None:
    text = (ROOT / "requirements" / "dev.lock").read_text()
    assert re.search(r"^-e \.$", text, flags=re.MULTILINE)
    for name in ("pytest-xdist", "pip", "moto"):
        pinned(ROOT / "requirements" / "dev.lock", name)


def test_the_checkov_version_is_the_locked_one() -> None:
    locked = pinned(ROOT / "requirements" / "checkov.lock", "checkov")
    assert re.search(rf"^CHECKOV_VERSION := {re.escape(locked)}$", (ROOT / "mk" / "checkov.mk").read_text(), flags=re.M)
