"""The README's examples are code CI runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quickstart_example_runs_and_survives_its_crash() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "POWERTOOLS_LOG_LEVEL": "ERROR"},
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if not line.startswith('{"')]
    assert lines[0] == "published 6 notes, approved by ana"
    assert lines[1] == "{'plan': 1, 'research': 1, 'publish': 1}"
    assert lines[2].startswith("7 invocations") and "crashes=1" in lines[2]  # continuations + the crash


def test_readme_quickstart_matches_the_example() -> None:
    readme = (ROOT / "README.md").read_text()
    example = (ROOT / "examples" / "quickstart.py").read_text()
    start = example.index("wf = Workflow(")
    end = example.index('if __name__ == "__main__":')
    assert example[start:end].strip() in readme, "README's quickstart drifted from examples/quickstart.py"


def test_readme_harness_test_runs_against_the_quickstart_workflow() -> None:
    """The README's "Test it like we do" block is a working pytest test."""
    import importlib.util

    readme = (ROOT / "README.md").read_text()
    start = readme.index("from stepchain.testing import BOUNDARIES, Harness")
    block = readme[start : readme.index("```", start)]
    spec = importlib.util.spec_from_file_location("quickstart_example", ROOT / "examples" / "quickstart.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    namespace: dict[str, object] = {"wf": module.wf}
    exec(block, namespace)
    test = namespace["test_survives_a_crash_anywhere"]
    assert callable(test)
    test()
