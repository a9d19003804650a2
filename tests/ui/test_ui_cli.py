"""The CLI: ``stepchain watch --local`` follows an embedded run to its end; ``stepchain ui`` serves until stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tests.ui.ui_flows import slow

from stepchain.cli import main
from stepchain.runtimes.local import EmbeddedAws, visibility_timeout_for
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
        cmd = [sys.executable, "-m", "stepchain.runtimes.local", "worker", "--workflow", "tests.ui.ui_flows:slow"]
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
    assert "each: 3/3" in out and "run.succeeded" in out and "stream: " in out  # it tailed the stream


def test_watch_without_an_emulator_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit, match=r"no embedded runtime at http://127\.0\.0\.1:9 "):
        main(["watch", "0" * 24, "--local", "http://127.0.0.1:9"])


def test_ui_serves_on_loopback_until_stopped() -> None:
    """``stepchain ui`` prints its URL, answers there, and stops on SIGINT (here: by its PID)."""
    import json
    import urllib.error
    import urllib.request

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    cmd = [sys.executable, "-m", "stepchain.cli", "ui", "--api", "http://127.0.0.1:9/v1", "--port", "0"]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("stepchain ui: http://127.0.0.1:"), line
        url = line.split()[2]
        with urllib.request.urlopen(url + "config.json", timeout=10) as resp:
            assert json.loads(resp.read())["source"] == "http://127.0.0.1:9/v1"
        with pytest.raises(urllib.error.HTTPError) as err:  # the API is unreachable: 502, said so
            urllib.request.urlopen(url + "api/runs?workflow=x", timeout=30)
        assert err.value.code == 502 and b"source_unreachable" in err.value.read()
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
