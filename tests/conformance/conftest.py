"""The whole matrix (marker ``conformance``) runs only when asked for by name (``-m conformance``, as
``make conformance`` does): pyproject's default ``-m 'not conformance'`` is replaced by any other ``-m``
(``pytest -m 'not e2e'`` would otherwise run all of it), so this deselects it then too."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    expr = str(config.getoption("markexpr") or "")
    if "conformance" in expr:
        return
    keep = [i for i in items if i.get_closest_marker("conformance") is None]
    if len(keep) < len(items):
        config.hook.pytest_deselected(items=[i for i in items if i.get_closest_marker("conformance") is not None])
        items[:] = keep
