"""A workflow from its ``module:attribute`` spec, as the command line, ``stepchain show``, the
embedded runtime's workers and the template generator name it."""

from __future__ import annotations

import importlib
import sys

from stepchain.define.workflow import Workflow


def load_workflow(spec: str) -> Workflow:
    """``package.module:attr`` -> the Workflow object it names."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise SystemExit(f"error: expected MODULE:ATTR, got {spec!r}")
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")  # like `python -m`: the current directory is importable
    try:
        obj: object = importlib.import_module(module_name)
    except ImportError as exc:
        hint = "its directory goes on the path with --pythonpath DIR (in a project made by `stepchain new`: "
        hint += "--pythonpath app --code-uri app/, as `make template` runs it)"
        raise SystemExit(f"error: cannot import {module_name!r}: {exc}; {hint}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise SystemExit(f"error: {module_name!r} has no attribute {attr!r}") from None
    if not isinstance(obj, Workflow):
        raise SystemExit(f"error: {spec} is a {type(obj).__name__}, not a stepchain Workflow")
    return obj
