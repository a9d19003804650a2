"""The repository's ``make deploy-local``: ``stepchain deploy-local`` (src/stepchain/deploy/deploy_local.py, the one
deploy tool) with this checkout's build directory as the default.

    make deploy-local [STACK=stepchain] [PARAMS='Transport=sqs ApiAuth=apikey'] [ENDPOINT=http://127.0.0.1:4566]
    python -m tools.deploy_local --stack NAME [--params 'K=V ...'] [--set Res.Prop.Path=VALUE ...] [--delete]

Tests and the demo call :func:`deploy` (``--set`` overrides a property in the deployed template only, e.g.
``--set FetchFunction.Timeout=10``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from stepchain.deploy.deploy_local import Deployment, configure
from stepchain.deploy.deploy_local import deploy as _deploy
from stepchain.exceptions import DeployError

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BUILD_DIR = REPO / ".aws-sam" / "build"
__all__ = ["DEFAULT_BUILD_DIR", "DeployError", "Deployment", "deploy", "main"]


def deploy(
    stack: str,
    params: Mapping[str, str] | str | None = None,
    *,
    endpoint: str | None = None,
    build_dir: Path = DEFAULT_BUILD_DIR,
    sets: Sequence[str] = (),
    timeout_s: float = 600.0,
) -> Deployment:
    return _deploy(stack, params or {}, endpoint=endpoint, build_dir=build_dir, sets=sets, timeout_s=timeout_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.deploy_local", description=(__doc__ or "").split("\n")[0])
    configure(parser, build_dir=DEFAULT_BUILD_DIR)
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
