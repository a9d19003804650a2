"""Issue 10.5: every run's ledger counts the AWS requests the engine made (per service) and prices them.

The counts are compared with what moto actually served: the harness counts every call the
engine's clients sent (botocore ``before-call``, ``Harness.api_calls``), Step Functions' history
holds every state entered, the SQS harness records every message sent.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from stepchain import RetryPolicy, Workflow
from stepchain.observe.ledger import orchestration_usd
from stepchain.observe.pricing import load_prices
from stepchain.testing import Harness, SfnHarness, SqsHarness


def chain(name: str, n: int = 3, *, big: bool = False, flaky: bool = False) -> Workflow:
    """``n`` steps of 0.1 s (virtual time; outputs > 32 KB go to S3 with ``big``); with ``flaky`` the
    second step fails once."""
    wf = Workflow(name)
    failed: list[int] = []
    for i in range(n):

        def step(ctx: Any, x: dict[str, Any], i: int = i) -> dict[str, Any]:
            time.sleep(0.1)
            if flaky and i == 1 and not failed:
                failed.append(1)
                raise RuntimeError("once")
            return {"v": x["v"] + 1, "pad": "x" * (40_000 if big else 10)}

        wf.step(name=f"s{i}", retry=RetryPolicy(max_attempts=3, backoff_s=1))(step)
    return wf


def served(calls: dict[str, int], service: str, ops: tuple[str, ...]) -> int:
    return sum(n for op, n in calls.items() if op.split(".")[0] == service and op.split(".")[1] in ops)


@pytest.mark.parametrize("big", [False, True])
def test_the_ledger_counts_every_dynamodb_and_s3_request_moto_served(big: bool) -> None:
    wf = chain("cost-moto", big=big, flaky=True)
    with Harness(wf, backend="moto") as h:
        run_id = h.start("cost-moto", {"v": 0})
        assert h.run(run_id) == "SUCCEEDED"
        calls = dict(h.api_calls)  # before reading the ledger (the harness's own reads are not counted anyway)
        totals = h.view(run_id).totals
    rq = totals["requests"]
    reads = ("GetItem", "Query", "Scan", "BatchGetItem", "TransactGetItems")
    writes = ("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems")
    assert rq.get("ddb_read", 0) == served(calls, "dynamodb", reads), calls  # 0: the input travels with the activation
    assert rq["ddb_write"] == served(calls, "dynamodb", writes), calls
    assert rq.get("s3_put", 0) == served(calls, "s3", ("PutObject",)) == (3 if big else 0)
    assert rq.get("s3_get", 0) == served(calls, "s3", ("GetObject",)) == (3 if big else 0)  # incl. the retry's read
    assert rq["ddb_wru"] >= rq["ddb_write"] and rq.get("ddb_rru", 0) >= rq.get("ddb_read", 0)
    assert totals["orchestration_usd"] == orchestration_usd(load_prices(), rq) > 0
    assert set(totals["orchestration_by_service"]) == ({"dynamodb", "s3"} if big else {"dynamodb"})


def test_in_memory_runs_count_no_aws_request() -> None:
    with Harness(chain("cost-mem"), backend="memory") as h:
        run_id = h.start("cost-mem", {"v": 0})
        h.run(run_id)
        totals = h.view(run_id).totals
    assert totals["requests"] == {} and totals["orchestration_usd"] == 0


def test_step_functions_transitions_and_invocations_match_the_execution_history() -> None:
    wf = chain("cost-sfn", flaky=True)
    with SfnHarness(wf) as h:
        run_id = h.start("cost-sfn", {"v": 0})
        assert h.run(run_id) == "SUCCEEDED"
        entered = [e for e in h.history(run_id) if e["type"].endswith("StateEntered")]
        invocations = len(h.invocations)
        view = h.view(run_id)
    rq = view.totals["requests"]
    # Route, s0, s1 (WAIT: s1.wake, s1.wait), s1, s2, Succeeded = 8
    assert rq["sfn_transition"] == len(entered) == 8
    assert rq["lambda_invoke"] == invocations == 4
    by_node = {n.key: n.requests for n in view.nodes}
    assert by_node["s0"]["sfn_transition"] == 1 and by_node["s1"]["sfn_transition"] == 4
    assert view.totals["orchestration_by_service"]["stepfunctions"] == pytest.approx(8 * 25e-6)


def test_sqs_counts_one_send_receive_and_delete_per_message() -> None:
    wf = chain("cost-sqs", flaky=True)
    with SqsHarness(wf, batch_size=1) as h:
        run_id = h.start("cost-sqs", {"v": 0})
        assert h.run(run_id) == "SUCCEEDED"
        sent = len(h.sent)
        view = h.view(run_id)
    rq = view.totals["requests"]
    assert sent == 4  # s0, s1, s1 again after its backoff, s2
    assert rq["sqs_send"] == rq["sqs_receive"] == rq["sqs_delete"] == rq["lambda_invoke"] == sent
    assert view.totals["orchestration_by_service"]["sqs"] == pytest.approx(3 * sent * 0.4e-6)


def test_restart_tax_avoided_includes_the_requests_of_the_work_not_redone() -> None:
    wf = chain("cost-crash", n=4)
    with Harness(wf, backend="moto") as h:
        h.crash_at("after_claim", node="s3")
        run_id = h.start("cost-crash", {"v": 0})
        assert h.run(run_id) == "SUCCEEDED"
        view = h.view(run_id)
    finished_before = [n for n in view.nodes if n.key in ("s0", "s1", "s2")]
    tax = view.restart_tax_avoided
    assert tax.crashes == 1 and tax.seconds == pytest.approx(0.3)
    orchestration = sum(n.orchestration_usd for n in finished_before)
    assert orchestration > 0
    compute = sum(n.compute_usd for n in finished_before)
    assert tax.usd == pytest.approx(compute + orchestration, abs=1e-8)  # node figures are rounded to 1e-9


def test_cli_text_and_html_timeline_show_the_orchestration_cost(tmp_path: Any, capsys: Any) -> None:
    import json

    from stepchain.cli import main
    from stepchain.observe.timeline import render_html, render_text

    with Harness(chain("cost-show", big=True), backend="moto") as h:
        run_id = h.start("cost-show", {"v": 0})
        h.run(run_id)
        view = h.view(run_id)
    usd = f"${view.totals['orchestration_usd']:.6f}"
    text = render_text(view)
    assert f"orchestration (AWS requests): {usd} (dynamodb $" in text and "s3 $" in text
    assert f"{view.nodes[0].orchestration_usd:.6f}" in next(ln for ln in text.splitlines() if ln.startswith("s0"))
    page = render_html(view)
    assert "AWS requests $" in page and usd in page
    saved = tmp_path / "run.json"
    saved.write_text(json.dumps(view.to_dict()))
    assert main(["show", "--json", str(saved)]) == 0
    assert usd in capsys.readouterr().out
