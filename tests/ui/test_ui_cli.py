"""``stepchain watch --local``: follows a run of the embedded runtime to its end (the CLI path, end to end)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tests.ui.ui_flows import slow

from stepchain.cli import main
from stepchain.local import EmbeddedAws, visibility_timeout_for
from stepchain.ui.backends import embedded_engine

ROOT = Path(__file__).resolve().parents[2]


def test_watch_follows_an_embedded_run_to_its_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with EmbeddedAws() as aws:
        stack = aws.provision(visibility_timeout_s=visibility_timeout_for(10_000))
        engine = embedded_engine(aws.endpoint, [slow])
        run, _ = engine.start("slow", {})
        engine.deliver_event(run.run_id, "approval", {"ok": True})  # buffered until the run waits
        env = {
            **os.environ,
            **stack.env(PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]), UI_TEST_SLOW_S="0.2"),
        }
        cmd = [sys.executable, "-m", "stepchain.local", "worker", "--workflow", "tests.ui.ui_flows:slow"]
        worker = subprocess.Popen(
            [*cmd, "--sweep-every", "0", "--idle-exit", "60"],
            env=env,
            cwd=ROOT,
            stdout=(tmp_path / "worker.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        try:
            argv = ["watch", run.run_id, "--local", aws.endpoint, "--workflow", "tests.ui.ui_flows:slow"]
            code = main([*argv, "--interval", "0.2"])
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=15)
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"slow {run.run_id}  SUCCEEDED" in out
    assert "3/3 items" in out and "4/4 nodes done" in out


def test_watch_without_an_emulator_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit, match=r"no embedded runtime at http://127\.0\.0\.1:9 "):
        main(["watch", "0" * 24, "--local", "http://127.0.0.1:9"])
