"""`stepchain new`: what it writes parses, the template is the generator's (``--check`` passes in the new
project), the starter workflow has the parts the issue asks for, and a non-empty target is refused (exit 2,
nothing touched). The project's own test suite runs in tests/template/test_scaffold_project.py, its
deployment in tests/e2e/test_e2e_scaffold.py."""

from __future__ import annotations

import ast
import json
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from stepchain.cli import main
from stepchain.define.workflow import Workflow
from stepchain.deploy.samgen_base import load_cfn
from stepchain.deploy.scaffold import installed_wheel, new_project
from stepchain.exceptions import ScaffoldError

WHEEL_NAME = "stepchain-0.1.0-py3-none-any.whl"


@pytest.fixture
def fake_wheel(tmp_path: Path) -> Path:
    """A file named like a wheel: `stepchain new` only copies it (the layer and venv install it later)."""
    path = tmp_path / "dist" / WHEEL_NAME
    path.parent.mkdir()
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("stepchain/__init__.py", "")
    return path


@pytest.fixture
def clean_modules() -> Iterator[None]:
    """The generated package (my_agent) must not stay imported between tests."""
    before = set(sys.modules)
    path = list(sys.path)
    yield
    for name in set(sys.modules) - before:
        if name.split(".")[0] in ("my_agent", "orders"):
            del sys.modules[name]
    sys.path[:] = path


def test_every_rendered_file_parses_and_no_placeholder_is_left(
    tmp_path: Path, fake_wheel: Path, clean_modules: None
) -> None:
    project = new_project(tmp_path / "my-agent", wheel=fake_wheel)
    root = project.path
    assert (project.name, project.package) == ("my-agent", "my_agent")
    expected = {
        ".gitignore", "Makefile", "README.md", "pyproject.toml", "template.yaml", "template.overrides.yaml",
        "requirements-sam.lock",
        "app/app.py", "app/my_agent/__init__.py", "app/my_agent/workflow.py", "layers/stepchain/Makefile",
        "statemachine/my-agent.asl.json", "tests/test_workflow.py", "tests/test_template.py",
        "events/api-start-run.json", "events/api-send-event.json", "events/api-get-run.json",
        f"vendor/{WHEEL_NAME}",
    }  # fmt: skip
    written = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert written == expected
    assert {p.as_posix() for p in project.files} == expected
    for rel in written - {f"vendor/{WHEEL_NAME}"}:
        text = (root / rel).read_text()
        assert "@@" not in text, rel
        if rel.endswith(".py"):
            ast.parse(text, rel)
        elif rel.endswith(".json"):
            json.loads(text)
        elif rel.endswith(".yaml"):
            assert isinstance(load_cfn(text), dict), rel
        elif rel.endswith(".toml"):
            tomllib.loads(text)
    assert (root / "vendor" / WHEEL_NAME).read_bytes() == fake_wheel.read_bytes()
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    assert pyproject["project"]["dependencies"] == ["stepchain[testing,template,deploy]==0.1.0"]
    start = json.loads(json.loads((root / "events" / "api-start-run.json").read_text())["body"])
    assert start["workflow"] == "my-agent"
    # the project's Makefile has the targets the README promises, and its layer installs the vendored wheel
    makefile = (root / "Makefile").read_text()
    targets = ("test", "template", "template-check", "validate", "build", "deploy-local", "destroy-local", "invoke")
    for target in (*targets, "api-url"):
        assert f"\n{target}:" in makefile, target
    assert "vendor/stepchain-*.whl" in (root / "layers" / "stepchain" / "Makefile").read_text()


def test_the_starter_workflow_has_a_step_an_each_a_once_and_an_event_wait(
    tmp_path: Path, fake_wheel: Path, clean_modules: None
) -> None:
    new_project(tmp_path / "my-agent", wheel=fake_wheel)
    sys.path.insert(0, str(tmp_path / "my-agent" / "app"))
    from my_agent.workflow import wf  # type: ignore[import-not-found]

    assert isinstance(wf, Workflow) and wf.name == "my-agent"
    assert [(n.id, n.kind.value) for n in wf.nodes] == [
        ("outline", "step"), ("draft", "step"), ("review", "wait"), ("publish", "step"),
    ]  # fmt: skip
    source = (tmp_path / "my-agent" / "app" / "my_agent" / "workflow.py").read_text()
    assert "ctx.each(" in source and "ctx.once(" in source
    assert "research_agent" not in source  # shares no code with the example


def test_the_template_is_the_generators_output_and_check_passes_in_the_project(
    tmp_path: Path, fake_wheel: Path, clean_modules: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = new_project(tmp_path / "orders", transport="sqs", wheel=fake_wheel).path
    monkeypatch.chdir(root)
    wf_args = ["orders.workflow:wf", "--pythonpath", "app"]
    assert main(["asl", *wf_args, "--out", "statemachine", "--check"]) == 0
    assert main(["template", *wf_args, "--code-uri", "app/", "--out", "template.yaml", "--check"]) == 0
    tpl = load_cfn((root / "template.yaml").read_text())
    assert tpl["Parameters"]["Transport"]["Default"] == "sqs"  # --transport, through template.overrides.yaml
    assert tpl["Globals"]["Function"]["CodeUri"] == "app/"
    assert tpl["Resources"]["OrdersStateMachine"]["Properties"]["DefinitionUri"] == "statemachine/orders.asl.json"
    # a stale template fails the check
    (root / "template.yaml").write_text((root / "template.yaml").read_text().replace("Timeout: 30", "Timeout: 31"))
    assert main(["template", *wf_args, "--code-uri", "app/", "--out", "template.yaml", "--check"]) == 1


def test_a_non_empty_directory_is_refused_with_exit_2_and_left_alone(
    tmp_path: Path, fake_wheel: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "busy"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(ScaffoldError, match="not empty"):
        new_project(target, wheel=fake_wheel)
    assert main(["new", str(target), "--wheel", str(fake_wheel)]) == 2
    err = capsys.readouterr().err
    assert "is not empty" in err and "never overwrites" in err
    assert [p.name for p in target.iterdir()] == ["notes.txt"]
    assert (target / "notes.txt").read_text() == "mine"
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert main(["new", str(a_file), "--wheel", str(fake_wheel)]) == 2
    assert a_file.read_text() == "x"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--name", "My Agent"], "not a usable workflow name"),
        (["--name", "stepchain"], "is taken here"),
        (["--wheel", "missing.whl"], "is not a stepchain wheel"),
    ],
)
def test_unusable_arguments_exit_2_before_anything_is_written(
    tmp_path: Path, fake_wheel: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "p"
    extra = [] if "--wheel" in args else ["--wheel", str(fake_wheel)]
    code = main(["new", str(target), *args, *extra])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not target.exists()


def test_an_editable_install_cannot_be_vendored_without_wheel(tmp_path: Path) -> None:
    # this checkout's venv has stepchain as an editable install: there is no wheel to rebuild
    with pytest.raises(ScaffoldError, match="editable"):
        installed_wheel(tmp_path)
    # and `stepchain new` without --wheel says so without leaving anything behind (it left vendor/)
    with pytest.raises(ScaffoldError, match="editable"):
        new_project(tmp_path / "agent")
    assert not (tmp_path / "agent").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ScaffoldError, match="editable"):
        new_project(tmp_path / "empty")
    assert list((tmp_path / "empty").iterdir()) == []
