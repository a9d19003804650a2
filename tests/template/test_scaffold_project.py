"""`stepchain new` run from an installed wheel (not this checkout): the project vendors a wheel rebuilt from
the installed distribution, identical in content to the one installed, and the project's own tests pass in a
venv that has only the wheel's stepchain. (tests/e2e/test_e2e_scaffold.py runs all of them and deploys.)"""

from __future__ import annotations

import os
import re
import subprocess
import zipfile
from pathlib import Path

from tests.template.samshell import ROOT


def _members(wheel: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(wheel) as zf:
        return {n: zf.read(n) for n in zf.namelist() if not n.endswith(".dist-info/RECORD")}


def test_new_from_an_installed_wheel_vendors_that_wheel_and_its_tests_pass(
    wheel_venv: Path, wheel: Path, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    new = subprocess.run(
        [str(wheel_venv / "bin" / "stepchain"), "new", "shop-agent"],  # no --wheel: rebuilt from the install
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert new.returncode == 0, new.stderr
    project = tmp_path / "shop-agent"
    [vendored] = (project / "vendor").glob("stepchain-*.whl")
    assert vendored.name == wheel.name
    assert _members(vendored) == _members(wheel)  # same files, same bytes (RECORD is rewritten)
    assert not any(str(ROOT) in p.read_text() for p in project.rglob("*") if p.is_file() and p.suffix != ".whl")
    # a share of the project's suite (the whole of it runs in the e2e tier): every test but the
    # boundary matrix, and the matrix for one boundary
    tests = subprocess.run(
        [str(wheel_venv / "bin" / "python"), "-m", "pytest", "-q", "-k", "not every_boundary or after_claim"],
        cwd=project, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert tests.returncode == 0, tests.stdout[-4000:] + tests.stderr[-2000:]
    assert re.search(r"\b\d+ passed\b", tests.stdout) and not re.search(r"\b\d+ (failed|error)", tests.stdout)
