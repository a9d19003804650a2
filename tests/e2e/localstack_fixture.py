"""Start a Docker-free LocalStack for the e2e tier and stop it by PID (helpers + a fixture factory).

Port choice: a FREE port on 127.0.0.1 (not 4566), state dir ``.localstack/pytest``, so a test session never
collides with a LocalStack that ``make localstack-up`` keeps on 4566 (state dir ``.localstack``). If a
crashed session left its instance running, the next session reuses it and stops it at the end.

``STEPCHAIN_LOCALSTACK_ENDPOINT=http://...`` skips starting anything and uses that endpoint instead
(e.g. stock LocalStack in Docker); then nothing is stopped either.

Usage in a conftest::

    from tests.e2e.localstack_fixture import make_localstack_fixture
    localstack_endpoint = make_localstack_fixture()  # session-scoped, yields "http://127.0.0.1:PORT"
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import pytest

REPO = Path(__file__).resolve().parents[2]
CTL_PATH = REPO / "infra" / "localstack" / "localstack_ctl.py"
DEFAULT_STATE_DIR = REPO / ".localstack" / "pytest"
ENDPOINT_ENV = "STEPCHAIN_LOCALSTACK_ENDPOINT"
Scope = Literal["session", "package", "module", "class", "function"]


def load_ctl() -> ModuleType:
    """Import infra/localstack/localstack_ctl.py (stdlib only) without putting infra/ on sys.path."""
    if (module := sys.modules.get("localstack_ctl")) is not None:
        return module
    spec = importlib.util.spec_from_file_location("localstack_ctl", CTL_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["localstack_ctl"] = module  # dataclasses need the module registered while executing
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def localstack_session(state_dir: Path = DEFAULT_STATE_DIR, port: int = 0) -> Iterator[str]:
    """Yield the endpoint of a running LocalStack; stop it afterwards (also when the body raises)."""
    if external := os.environ.get(ENDPOINT_ENV):
        yield external.rstrip("/")
        return
    ctl = load_ctl()
    try:
        handle = ctl.start(state_dir, port=port)
    except RuntimeError as exc:
        pytest.fail(f"LocalStack did not start: {exc} (install: make .venv-localstack/.installed)")
    try:
        yield handle.endpoint
    finally:
        ctl.stop(handle)


def aws_client(service: str, endpoint: str) -> Any:
    """A boto3 client for LocalStack (dummy credentials, account 000000000000), made by localstack-client."""
    from urllib.parse import urlsplit

    from botocore.config import Config
    from localstack_client.session import Session

    session = Session(
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        localstack_host=urlsplit(endpoint).netloc,
    )
    return session.client(
        service, config=Config(retries={"max_attempts": 2}, inject_host_prefix=False, read_timeout=120)
    )


def make_localstack_fixture(
    state_dir: Path = DEFAULT_STATE_DIR, port: int = 0, scope: Scope = "session"
) -> Callable[..., Any]:
    """Build a pytest fixture (default: session-scoped) that yields the LocalStack endpoint URL."""

    def localstack_endpoint() -> Iterator[str]:
        with localstack_session(state_dir, port) as endpoint:
            yield endpoint

    return pytest.fixture(localstack_endpoint, scope=scope)
