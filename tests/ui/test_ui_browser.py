"""The live page in a real browser: a run on the embedded runtime updates on the page while it runs.

Chromium is the distribution's (``apt-get install chromium``; ``make test`` installs it through
mk/ui.mk), driven by Playwright's Python package pointed at it with ``executable_path`` (no
``playwright install``). Everything stays on 127.0.0.1: the emulator, the worker, the page's server.
Outside ``make test`` the test is skipped when Chromium or Playwright is missing; under it
(``STEPCHAIN_REQUIRE_BROWSER=1``) that is a failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.ui.ui_flows import slow

from stepchain.runtimes.local import EmbeddedAws, visibility_timeout_for
from stepchain.ui import EngineBackend, UiServer
from stepchain.ui.backends import embedded_engine

ROOT = Path(__file__).resolve().parents[2]
BROWSER = os.environ.get("STEPCHAIN_UI_BROWSER") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: how long a node may take to reach a status on the page (the worker sleeps 1.5 s per slow step)
WAIT_MS = 30_000


def _require_browser() -> Any:
    required = os.environ.get("STEPCHAIN_REQUIRE_BROWSER") == "1"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if required:
            pytest.fail("playwright is not installed (it is in the dev extra)")
        pytest.skip("playwright is not installed")
    if not os.path.exists(BROWSER):
        if required:
            pytest.fail(f"no Chromium at {BROWSER} (make test installs it: mk/ui.mk)")
        pytest.skip(f"no Chromium at {BROWSER}")
    return sync_playwright


@pytest.fixture
def page() -> Iterator[Any]:
    sync_playwright = _require_browser()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=BROWSER, headless=True, args=ARGS)
        try:
            yield browser.new_page()
        finally:
            browser.close()


@pytest.fixture
def embedded() -> Iterator[tuple[Any, Any]]:
    """The embedded runtime (moto's server on 127.0.0.1) and its deployment's names."""
    with EmbeddedAws() as aws:
        yield aws, aws.provision(visibility_timeout_s=visibility_timeout_for(10_000))


def spawn_worker(stack: Any, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        **stack.env(PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]), UI_TEST_SLOW_S="1.5"),
        "POWERTOOLS_LOG_LEVEL": "WARNING",
    }
    cmd = [sys.executable, "-m", "stepchain.runtimes.local", "worker", "--workflow", "tests.ui.ui_flows:slow"]
    cmd += ["--budget-ms", "10000", "--sweep-every", "0", "--idle-exit", "60"]
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def test_the_live_page_shows_a_run_updating_while_it_runs(
    page: Any, embedded: tuple[Any, Any], tmp_path: Path
) -> None:
    aws, stack = embedded
    engine = embedded_engine(aws.endpoint, [slow])
    run, _ = engine.start("slow", {"question": "q"})
    worker = None
    with UiServer(EngineBackend(engine), port=0, poll_ms=250) as ui:
        try:
            page.goto(ui.run_url(run.run_id))
            page.wait_for_selector(f"#run-id:text('{run.run_id}')")
            page.evaluate("window.__notReloaded = true")
            worker = spawn_worker(stack, tmp_path / "worker.log")  # the run moves only now, with the page open

            def seen(selector: str) -> None:
                page.wait_for_selector(selector, timeout=WAIT_MS)

            seen('tr[data-key="gather"][data-status="RUNNING"]')
            seen('#run-status[data-status="RUNNING"]')
            seen('tr[data-key="gather"][data-status="SUCCEEDED"]')
            seen('tr[data-key="square"] td.progress:text("3 items")')  # the map's items, one row each
            assert page.locator('tr[data-key^="square#"]').count() == 3
            seen('tr[data-key="square"][data-status="SUCCEEDED"]')
            seen('#approve-box:not([hidden])')  # the run waits for "approval": the button is offered
            assert page.locator("#wait-event").inner_text() == "approval"
            assert page.locator("#btn-redrive").is_hidden() and page.locator("#btn-fork").is_disabled()

            page.click('tr[data-key="gather"]')  # click-through: the step's output
            seen('#details-title:text-is("gather")')
            assert "output" in page.locator("#details-fields").inner_text()
            shown = page.locator("#details-fields pre").first.inner_text()
            assert "".join(shown.split()) == "[1,2,3]"

            page.click("#btn-approve")  # POST /runs/{id}/events/approval through the proxy
            seen('tr[data-key="report"][data-status="RUNNING"]')
            seen('tr[data-key="report"][data-status="SUCCEEDED"]')
            seen('#run-status[data-status="SUCCEEDED"]')
            assert page.evaluate("window.__notReloaded") is True  # all of it without a reload
            bars = page.locator('tr[data-key="report"] .bar').get_attribute("style") or ""
            assert "left:" in bars and "width:" in bars  # placed on the time axis
        finally:
            if worker is not None:
                worker.send_signal(signal.SIGTERM)
                try:
                    worker.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    worker.kill()
                    worker.wait()
    assert engine.get_run(run.run_id).status.value == "SUCCEEDED"


def test_child_runs_nest_and_link_and_the_steering_buttons_work(page: Any) -> None:
    """On an in-memory harness (the API in process, moved by the test): a parallel node's child runs
    are nested and linked, expand in place, and Redrive / Cancel change the run on the page."""
    from tests.ui import ui_flows

    from stepchain.testing import Harness

    ui_flows.FAIL_FINISH["on"] = True
    with Harness(ui_flows.parent, backend="memory") as h:
        backend = EngineBackend(h.engine)

        def move() -> None:
            with backend.lock:  # the page's reads wait while the harness writes
                h.run()

        run_id = h.start("parent", {"order": 7})
        move()
        assert h.status(run_id) == "FAILED"
        with UiServer(backend, port=0, poll_ms=200) as ui:
            page.goto(ui.run_url(run_id))
            page.wait_for_selector('#run-status[data-status="FAILED"]', timeout=WAIT_MS)
            page.evaluate("window.__notReloaded = true")
            assert "finish was told to fail" in page.locator("#run-error").inner_text()
            assert page.locator('tr[data-key="both"] td.progress').inner_text() == "2/2 child runs"
            children = page.locator("tr.child")
            assert children.count() == 2
            child_id = children.first.get_attribute("data-child")
            assert page.locator(f'tr.child a[href="/?run={child_id}"]').count() == 1
            page.click(f'button.expand[data-child="{child_id}"]')  # the child's own nodes, nested
            page.wait_for_selector(f'tr.node.depth-2[data-run="{child_id}"][data-key="work"]', timeout=WAIT_MS)

            ui_flows.FAIL_FINISH["on"] = False
            page.click("#btn-redrive")  # POST /runs/{id}/redrive
            page.wait_for_selector('#action-msg:text("redrive: RUNNING")', timeout=WAIT_MS)
            move()
            page.wait_for_selector('#run-status[data-status="SUCCEEDED"]', timeout=WAIT_MS)
            page.wait_for_selector('tr[data-key="finish"][data-status="SUCCEEDED"]', timeout=WAIT_MS)
            assert page.evaluate("window.__notReloaded") is True
            assert page.locator("#btn-cancel").is_hidden() and page.locator("#btn-redrive").is_hidden()

            page.click(f'tr.child a[href="/?run={child_id}"]')  # the link: the child's page names its parent
            page.wait_for_selector('#run-status[data-status="SUCCEEDED"]', timeout=WAIT_MS)
            assert page.locator("#run-id").inner_text() == child_id
            assert page.locator("#parent-link").inner_text().startswith(f"{run_id}/both/")

            other = h.start("parent", {"order": 8})  # not moved: the run is active
            page.goto(ui.run_url(other))
            page.click("#btn-cancel")  # POST /runs/{id}/cancel
            page.wait_for_selector('#run-status[data-status="CANCELLED"]', timeout=WAIT_MS)
            assert h.status(other) == "CANCELLED"

            page.goto(ui.url + "?workflow=parent")  # the runs list (same virtual millisecond: any order)
            page.wait_for_selector("#runs-body tr", timeout=WAIT_MS)
            assert sorted(page.locator("#runs-body a").all_inner_texts()) == sorted([other, run_id])
