"""stepchain installs from its built wheel outside this repository, and the `testing` extra brings the moto
harness: a project that shares nothing with this checkout tests its workflow with a crash at every boundary."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROJECT_TEST = '''
from stepchain import StepContext, Workflow
from stepchain.testing import BOUNDARIES, Harness

wf = Workflow("greeter")


@wf.step()
def names(ctx: StepContext, request: dict) -> list[str]:
    return request["names"]


@wf.step()
def greet(ctx: StepContext, people: list[str]) -> list[str]:
    return ctx.each(people, lambda name: f"hello {name}")


wf.wait_for_event("approval")


@wf.step()
def send(ctx: StepContext, approval: dict) -> str:
    return ctx.once("send", lambda: f"sent {len(ctx.output_of('greet'))} greetings")


def test_installed_from_the_wheel() -> None:
    import stepchain

    assert "site-packages" in stepchain.__file__


def test_survives_a_crash_at_every_boundary() -> None:
    for boundary in BOUNDARIES:
        with Harness(wf, duplicate_delivery=True) as h:
            h.crash_at(boundary, node="greet")
            run_id = h.start("greeter", {"names": ["ana", "bo", "chen"]})
            h.run()
            h.send_event(run_id, "approval", {"ok": True})
            h.run()
            assert h.status(run_id) == "SUCCEEDED", boundary
'''


def test_wheel_with_the_testing_extra_runs_a_projects_harness_tests(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    install = subprocess.run([*pip, f"{wheel}[testing]"], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    project = tmp_path / "project"
    project.mkdir()
    (project / "test_greeter.py").write_text(PROJECT_TEST)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", str(project)],
        cwd=project, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "2 passed" in result.stdout
