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
    assert "crashes=1" in lines[2]


def test_readme_quickstart_matches_the_example() -> None:
    readme = (ROOT / "README.md").read_text()
    example = (ROOT / "examples" / "quickstart.py").read_text()
    start = example.index("wf = Workflow(")
    end = example.index('if __name__ == "__main__":')
    assert example[start:end].strip() in readme, "README's quickstart drifted from examples/quickstart.py"
