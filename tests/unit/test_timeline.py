"""The run timeline: terminal text, HTML, and `stepchain show`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stepchain import StepContext, Workflow
from stepchain.cli import main
from stepchain.observe.ledger import RunView
from stepchain.observe.timeline import render_html, render_text
from stepchain.testing import Harness


def make_view() -> RunView:
    wf = Workflow("timeline")
    clock: list[Harness] = []

    @wf.step(timeout_s=5)
    def crawl(ctx: StepContext, n: int) -> list[int]:
        def one(i: int) -> int:
            clock[0].clock.advance(1_500)
            return i * i

        return ctx.each(list(range(n)), one)

    @wf.map(max_concurrency=2)
    def price(ctx: StepContext, x: int) -> int:
        ctx.record_cost(usd=0.01, input_tokens=10, output_tokens=2)
        return x + 1

    with Harness(wf, backend="memory") as h:
        clock.append(h)
        h.crash_at("mid_item", node="crawl", skip=1)
        run_id = h.start("timeline", 6)
        h.run()
        assert h.status(run_id) == "SUCCEEDED"
        return h.view(run_id)


def test_text_shows_every_step_invocation_bars_and_the_restart_tax() -> None:
    view = make_view()
    text = render_text(view, items=True)
    assert "crawl" in text and "price" in text and "└ 00005" in text
    crawl_line = next(line for line in text.splitlines() if line.startswith("crawl"))
    assert "✗" in crawl_line and "▓" in crawl_line and "█" in crawl_line  # crashed, continued, succeeded
    assert "1 crash(es) recovered" in text
    assert f"restart tax avoided: {view.restart_tax_avoided.seconds:.1f} s" in text
    assert view.restart_tax_avoided.seconds == pytest.approx(1.5)  # one page was done before the crash


def test_html_is_self_contained_with_crash_markers_and_costs() -> None:
    view = make_view()
    page = render_html(view)
    assert page.startswith("<!doctype html>") and "<script" not in page and "http" not in page.split("<body>")[1]
    assert page.count('class="crash"') == len(view.crash_events) == 1
    assert page.count('class="bar"') == sum(len(n.history) + sum(len(i.history) for i in n.items) for n in view.nodes)
    assert "0.060000" in page  # recorded cost of the map: 6 x $0.01


def test_show_reads_a_saved_view_and_writes_html(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    view = make_view()
    saved = tmp_path / "run.json"
    saved.write_text(json.dumps(view.to_dict()))
    assert RunView.from_dict(json.loads(saved.read_text())) == view
    assert main(["show", "--json", str(saved), "--html", str(tmp_path / "run.html")]) == 0
    assert view.run_id in capsys.readouterr().out
    assert (tmp_path / "run.html").read_text() == render_html(view)
    with pytest.raises(SystemExit, match="cannot read a run view"):
        main(["show", "--json", str(tmp_path / "missing.json")])
