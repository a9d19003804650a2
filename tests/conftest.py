"""Session fixtures shared by tiers: stepchain's wheel and a venv that has it installed.

The template tier (tests/template/test_wheel_install.py, ...) and the e2e tier (test_e2e_scaffold.py) use the
same wheel, built once per session.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


# Test tiers (markers in pyproject.toml): `exhaustive` cases (the rest of the crash matrices on slow transports,
# see tests/matrix.py) run only with --exhaustive (make test-full). make test runs tests/e2e in a pytest
# process of its own (one LocalStack for all of it) beside the xdist workers that run the rest: xdist's
# --dist loadgroup cannot keep them together on pytest 9 (xdist 3.8 renames item._nodeid, which pytest 9
# no longer reads).
def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--exhaustive", action="store_true", help="also run the exhaustive crash-matrix cases (make test-full)"
    )


# Modules whose tests run on moto or in real time without saying so in their names: marked slow, so make
# test-fast (-m "not slow", and -k without the moto transports) leaves them to make test.
SLOW_MODULES = {
    f"tests/integration/{name}.py"
    for name in (
        "test_research_agent",
        "test_heartbeat",
        "test_heartbeat_short_queue",
        "test_orchestration_cost",
        "test_examples",
        "test_harness_parity",
    )
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--exhaustive"):
        kept = [i for i in items if i.get_closest_marker("exhaustive") is None]
        if len(kept) < len(items):
            config.hook.pytest_deselected(items=[i for i in items if i.get_closest_marker("exhaustive")])
            items[:] = kept
    for item in items:
        if item.path.is_relative_to(ROOT) and item.path.relative_to(ROOT).as_posix() in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


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


@pytest.fixture(scope="session")
def wheel_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with stepchain installed from ``wheel`` (``pip install --no-deps``), whose dependencies (boto3,
    moto, pytest, PyYAML, aws-sam-translator, ...) come from this checkout's venv through a ``.pth`` file:
    about 5 s instead of the ~1 min a full ``pip install stepchain-<v>.whl[testing,template,deploy]`` takes
    (tests/template/test_wheel_install.py does that full install). That venv's own stepchain is an
    editable install, which a ``.pth`` path entry does not activate: ``import stepchain`` is the wheel's."""
    venv = tmp_path_factory.mktemp("wheel-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    (Path(site) / "zz_checkout_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check", str(wheel)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    where = subprocess.run(
        [str(python), "-c", "import stepchain; print(stepchain.__file__)"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    assert where.startswith(site), f"stepchain imported from {where}, not the wheel in {site}"
    (venv / ".installed").touch()  # what a project's Makefile checks before installing into VENV
    return venv


@pytest.fixture(autouse=True)
def _explicit_local_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """The runs API fails closed (ownership on, signing keys required) unless told otherwise: tests that
    call it in process run in the explicit local mode, as the embedded runtime and the demo do. A test
    of ownership sets ``STEPCHAIN_OWNERSHIP=on`` (and keys) itself."""
    import os

    if not os.environ.get("STEPCHAIN_OWNERSHIP"):
        monkeypatch.setenv("STEPCHAIN_OWNERSHIP", "local")
