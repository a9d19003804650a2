"""A concurrency key of 2 on the embedded runtime (issue 19): real worker processes, real time, every
message sent twice. The workflow logs each holder's start and end; no moment has more than 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.integration.limits_local_flow import LIMIT, LOG

from stepchain.testing import LocalHarness

ROOT = Path(__file__).resolve().parents[2]


def most_at_once(spans: list[tuple[float, float]]) -> int:
    events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans], key=lambda e: (e[0], e[1]))
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def test_four_worker_processes_never_run_more_than_two_holders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "holders.log"
    monkeypatch.setenv(LOG, str(log))  # before the harness starts: its workers inherit it
    with LocalHarness(
        "tests.integration.limits_local_flow:wf", workers=4, duplicate_delivery=True, pythonpath=[str(ROOT)]
    ) as h:
        ids = [h.start("limits-local", i) for i in range(8)]
        for r in ids:
            assert h.run(r) == "SUCCEEDED"
        assert [h.output(r) for r in ids] == list(range(8))
    spans = [(float(a), float(b)) for a, b in (line.split() for line in log.read_text().splitlines())]
    assert len(spans) == 8  # each step ran once (duplicates took no slot and ran nothing)
    assert most_at_once(spans) <= LIMIT
