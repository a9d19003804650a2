"""``stepchain new PATH``: scaffold a project for a new workflow, deployable as it is.

The files come from ``stepchain/deploy/project_template/`` (package data), rendered with :class:`string.Template`
using ``@@{...}`` placeholders (``name``, ``pkg``, ``wheel``, ``version``, ``transport``); a path part ``PKG``
becomes the Python package name, a ``.tmpl`` suffix is dropped (the templates of Python files are not
Python yet) and ``gitignore`` becomes ``.gitignore``. Then the state machine and ``template.yaml`` are
generated from the new workflow by the same code as ``stepchain asl`` / ``stepchain template`` (so they
are the generator's output, checked by the project's own tests), and the stepchain wheel is copied to
``vendor/``: the project's venv and its Lambda layer install stepchain from that wheel, never from a
checkout. Without ``--wheel``, the wheel is rebuilt from the installed distribution (its files as
recorded in ``RECORD``), which works for any non-editable install.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.metadata
import json
import re
import shutil
import string
import sys
import zipfile
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from stepchain.exceptions import ScaffoldError

TRANSPORTS = ("stepfunctions", "sqs")
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
_INSTALL_ONLY = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}  # written by pip, not in a wheel


class _Template(string.Template):
    delimiter = "@@"  # `$` is everywhere in Makefiles and shell


@dataclass(frozen=True)
class Project:
    """What ``stepchain new`` wrote."""

    path: Path
    name: str
    package: str
    wheel: Path
    files: tuple[Path, ...]


def check_target(path: Path) -> None:
    """Refuse a path that is a file or a non-empty directory (nothing is overwritten, ever)."""
    if path.exists() and not path.is_dir():
        raise ScaffoldError(f"{path} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()):
        raise ScaffoldError(f"{path} is not empty: stepchain new never overwrites files; choose a new directory")


def project_name(path: Path, name: str | None) -> str:
    """The workflow (and stack) name: ``--name``, else the directory's name lower-cased, ``_`` -> ``-``."""
    chosen = name if name is not None else path.resolve().name.lower().replace("_", "-")
    if not _NAME.match(chosen) or chosen.endswith("-") or "--" in chosen:
        raise ScaffoldError(
            f"{chosen!r} is not a usable workflow name: 1-63 of a-z 0-9 '-', starting with a letter (pass --name)"
        )
    return chosen


def installed_wheel(dest: Path) -> Path:
    """Rebuild the wheel of the installed stepchain distribution into ``dest`` (a fresh RECORD)."""
    try:
        dist = importlib.metadata.distribution("stepchain")
    except importlib.metadata.PackageNotFoundError as exc:  # pragma: no cover - we are stepchain
        raise ScaffoldError("stepchain is not installed as a distribution: pass --wheel") from exc
    direct = dist.read_text("direct_url.json")
    if direct and json.loads(direct).get("dir_info", {}).get("editable"):
        raise ScaffoldError(
            "stepchain is an editable install (a checkout): pass --wheel path/to/stepchain-<v>.whl "
            "(build one with `pip wheel --no-deps -w dist <checkout>`)"
        )
    info_dir = f"stepchain-{dist.version}.dist-info"
    target = dest / f"stepchain-{dist.version}-py3-none-any.whl"
    record: list[str] = []
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(dist.files or [], key=lambda f: f.as_posix()):
            rel = file.as_posix()
            if rel.startswith("..") or "__pycache__" in rel or rel.endswith(".pyc"):
                continue  # console scripts (regenerated from entry_points.txt) and byte code
            if rel.startswith(info_dir + "/") and rel.rsplit("/", 1)[-1] in _INSTALL_ONLY:
                continue
            data = Path(str(file.locate())).read_bytes()
            zf.writestr(zipfile.ZipInfo(rel, date_time=(1980, 1, 1, 0, 0, 0)), data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{rel},sha256={digest},{len(data)}")
        if f"{info_dir}/WHEEL" not in zf.namelist():
            raise ScaffoldError(f"the installed stepchain has no {info_dir}/WHEEL: pass --wheel")
        record.append(f"{info_dir}/RECORD,,")
        zf.writestr(f"{info_dir}/RECORD", "\n".join(record) + "\n")
    return target


def _walk(node: Traversable, rel: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Traversable]]:
    out: list[tuple[tuple[str, ...], Traversable]] = []
    for child in sorted(node.iterdir(), key=lambda c: c.name):
        if child.name == "__pycache__":
            continue
        if child.is_dir():
            out += _walk(child, (*rel, child.name))
        else:
            out.append(((*rel, child.name), child))
    return out


def _target(rel: tuple[str, ...], package: str) -> Path:
    parts = [package if p == "PKG" else p for p in rel]
    parts[-1] = parts[-1].removesuffix(".tmpl")
    if parts[-1] == "gitignore":
        parts[-1] = ".gitignore"
    return Path(*parts)


def _generate(root: Path, package: str) -> list[Path]:
    """statemachine/<name>.asl.json and template.yaml, by the generator (as ``make template`` does)."""
    from stepchain.define.load import load_workflow

    spec = f"{package}.workflow:wf"
    before = set(sys.modules)
    sys.path.insert(0, str(root / "app"))
    try:
        wf = load_workflow(spec)
        from stepchain.deploy import samgen
        from stepchain.deploy.asl import write_asl

        asl = write_asl(wf, root / "statemachine")
        out = root / "template.yaml"
        text = samgen.render(
            [wf], code_uri="app/", asl_dir="statemachine", out=out, command=f"stepchain template {spec}"
        )
        out.write_text(text)
    finally:
        sys.path.remove(str(root / "app"))
        for mod in set(sys.modules) - before:  # the new package must not shadow a later import
            if mod == package or mod.startswith(package + "."):
                del sys.modules[mod]
    return [Path(asl).relative_to(root), Path("template.yaml")]


def new_project(
    path: Path, *, name: str | None = None, transport: str = "stepfunctions", wheel: Path | None = None
) -> Project:
    """Write the project (see the module docstring); raises :class:`ScaffoldError` before writing anything
    when ``path`` is not empty, the name is unusable or the wheel is missing."""
    check_target(path)
    wf_name = project_name(path, name)
    package = wf_name.replace("-", "_")
    if transport not in TRANSPORTS:
        raise ScaffoldError(f"--transport must be one of {', '.join(TRANSPORTS)}, not {transport!r}")
    if wheel is not None and not (wheel.is_file() and wheel.name.startswith("stepchain-") and wheel.suffix == ".whl"):
        raise ScaffoldError(f"{wheel} is not a stepchain wheel file (stepchain-<version>-*.whl)")
    try:
        import yaml  # noqa: F401  (the template generator writes YAML)
    except ImportError as exc:
        raise ScaffoldError("stepchain new needs PyYAML: pip install 'stepchain[template]'") from exc
    if package in sys.modules or package in ("stepchain", "app", "tests"):
        raise ScaffoldError(f"the package name {package!r} is taken here: pass another --name")
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    (path / "vendor").mkdir()
    if wheel is None:
        try:
            wheel_path = installed_wheel(path / "vendor")
        except ScaffoldError:  # no wheel to vendor (an editable install): leave the target as it was
            shutil.rmtree(path / "vendor")
            if created:
                path.rmdir()
            raise
    else:
        wheel_path = path / "vendor" / wheel.name
        shutil.copyfile(wheel, wheel_path)
    version = wheel_path.name.split("-")[1]
    values = {"name": wf_name, "pkg": package, "wheel": wheel_path.name, "version": version, "transport": transport}
    written = [wheel_path.relative_to(path)]
    for rel, source in _walk(resources.files("stepchain.deploy").joinpath("project_template")):
        target = path / _target(rel, package)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(_Template(source.read_text()).substitute(values))
        written.append(target.relative_to(path))
    written += _generate(path, package)
    return Project(path, wf_name, package, wheel_path, tuple(sorted(written)))


def _new(args: argparse.Namespace) -> int:
    try:
        project = new_project(args.path, name=args.name, transport=args.transport, wheel=args.wheel)
    except ScaffoldError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for rel in project.files:
        print(f"  {rel}")
    print(
        f"created {project.path} (workflow {project.name!r}, stepchain from vendor/{project.wheel.name}); next:\n"
        f"  cd {project.path} && make test\n  make deploy-local   # to a LocalStack on 127.0.0.1:4566"
    )
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "new",
        help="scaffold a project for a new workflow (tests, template, Makefile, README)",
        description="Create PATH (new or empty) with a starter workflow, its Lambda handlers, tests written with "
        "stepchain.testing, the generated template.yaml, sample events, a Makefile (test, template, build, "
        "deploy-local) and a README. The project installs stepchain from the wheel copied to vendor/.",
    )
    p.add_argument("path", type=Path, metavar="PATH", help="the project directory (must not exist or be empty)")
    p.add_argument("--name", help="the workflow's name (default: PATH's name); its package is the name with '_'")
    p.add_argument("--transport", choices=TRANSPORTS, default="stepfunctions", help="the template's default")
    p.add_argument(
        "--wheel", type=Path, help="the stepchain wheel to vendor (default: rebuilt from the installed stepchain)"
    )
    p.set_defaults(func=_new)
