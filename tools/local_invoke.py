"""The repository's Docker-free ``sam local invoke`` (``make invoke`` without Docker): ``stepchain invoke``
(src/stepchain/deploy/local_invoke.py, shipped in the wheel) run as a script.

    python tools/local_invoke.py FunctionId event.json [--stack NAME] [--run-id ID] [--parameter-overrides K=V ...]
"""

from __future__ import annotations

import sys

from stepchain.deploy.local_invoke import NO_VALUE, Resolver, UsageError, load_template, main

__all__ = ["NO_VALUE", "Resolver", "UsageError", "load_template", "main"]

if __name__ == "__main__":
    sys.exit(main())
