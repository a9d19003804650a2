"""`make demo` end to end (demo/run_demo.py, worker processes on the embedded AWS): both kills land
inside an invocation, so the run always recovers from exactly 2 crashes; one "resumed" line per
takeover; no "heartbeat found the lease lost" warning (no worker lost a lease while alive); no warning
on stderr. Before: 1 crash when the first kill fell between invocations, two "resumed" lines for one
takeover, a false "lease lost" per finished summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow  # ~40 s of real time (a worker's budget, page and LLM latencies)


def test_make_demo_recovers_exactly_two_crashes_and_says_so_once_each(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
    env["PYTHONWARNINGS"] = "default"  # a DeprecationWarning anywhere in the demo would show on stderr
    proc = subprocess.run(
        [sys.executable, str(ROOT / "demo" / "run_demo.py"), "--out", str(tmp_path), "--timeout", "150"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary == {
        "status": "SUCCEEDED",
        "kills": 2,
        "crashes_recovered": 2,
        "resumed_lines": 2,
        "lease_lost_warnings": 0,
    }
    out = proc.stdout
    assert out.count("s after the kill") == 2
    assert "crashes recovered: 2" in out
    assert "Warning" not in proc.stderr, proc.stderr
    log = (tmp_path / "workers.log").read_text()
    assert "Warning:" not in log  # no Python warnings from the workers either (only the run's own log lines)
