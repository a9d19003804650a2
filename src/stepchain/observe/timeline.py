"""Render a run for people: a terminal table with a bar per invocation, or a self-contained HTML page."""

from __future__ import annotations

import html
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from stepchain.observe.ledger import NodeView, RunView

_GLYPH = {
    "succeeded": "█",
    "continued": "▓",
    "retrying": "▒",
    "crashed": "✗",
    "failed": "!",
    "fanned_out": "┤",
    "slept": "·",
    "event": "◆",
    "timed_out": "⌛",
    "cancelled": "-",
}
_COLOR = {
    "succeeded": "#2e7d32",
    "continued": "#1565c0",
    "retrying": "#ef6c00",
    "crashed": "#c62828",
    "failed": "#6a1b1a",
    "fanned_out": "#6d4c41",
    "slept": "#9e9e9e",
    "event": "#8e24aa",
    "timed_out": "#ad1457",
    "cancelled": "#616161",
}


def _ts(ms: int | None) -> str:
    return "-" if ms is None else datetime.fromtimestamp(ms / 1000, UTC).strftime("%H:%M:%S")


def _dur(ms: float) -> str:
    if ms < 1000:
        return f"{ms:.0f}ms"
    if ms < 120_000:
        return f"{ms / 1000:.1f}s"
    return f"{ms / 60_000:.1f}m"


def _rows(view: RunView) -> Iterable[tuple[str, NodeView]]:
    for node in view.nodes:
        yield node.key, node
        for item in node.items:
            yield f"  └ {item.key.split('#', 1)[1]}", item


def _span(view: RunView) -> tuple[int, int]:
    starts = [h["started_ms"] for _, n in _rows(view) for h in n.history if h.get("started_ms") is not None]
    ends = [h["ended_ms"] or h["started_ms"] for _, n in _rows(view) for h in n.history if h.get("started_ms")]
    t0 = min([*starts, view.created_ms])
    t1 = max([*ends, view.ended_ms or view.updated_ms, t0 + 1])
    return t0, t1


def _status(n: NodeView) -> str:
    """The node's status as shown: ``throttled`` for a step held by a limit (it is RETRYING)."""
    return "throttled" if n.throttled else n.status


def render_text(view: RunView, *, width: int = 40, items: bool = True) -> str:
    """A fixed-width table: one row per node, a bar per invocation (█ ok ▓ continued ✗ crashed)."""
    t0, t1 = _span(view)
    scale = width / max(1, t1 - t0)
    lines = [
        f"run {view.run_id}  {view.workflow}@{view.version}  {view.status}",
        f"{'step':<20} {'status':<10} {'att':>3} {'inv':>3} {'resumed':<8} {'time':>7} {'cost $':>9} "
        f"{'aws $':>9}  timeline",
    ]
    for label, n in _rows(view):
        if not items and n.index is not None:
            continue
        bar = [" "] * width
        for h in n.history:
            a = min(width - 1, int((h["started_ms"] - t0) * scale))
            b = min(width, int(((h["ended_ms"] or h["started_ms"]) - t0) * scale))
            for i in range(max(0, a), min(width, max(a + 1, b))):
                bar[i] = _GLYPH.get(h["outcome"], "?")
        resumed = "yes" if n.resumed else ""
        if n.checkpoint_hits:
            resumed = f"ckpt x{n.checkpoint_hits}"
        if n.copied_from:
            resumed = "copied"  # a fork's copy of its source's checkpoint
        lines.append(
            f"{label[:20]:<20} {_status(n):<10} {n.attempts:>3} {n.invocations:>3} {resumed:<8} "
            f"{_dur(n.duration_ms):>7} {n.cost_usd + n.compute_usd:>9.6f} {n.orchestration_usd:>9.6f}  |{''.join(bar)}|"
        )
    t, tax = view.totals, view.restart_tax_avoided
    lines.append(
        f"totals: {t['succeeded']}/{t['nodes']} steps done, {t['invocations']} invocations, "
        f"{t['crashes']} crash(es) recovered, {t['resumed_nodes']} step(s) resumed from checkpoints, "
        f"cost ${t['cost_usd'] + t['compute_usd']:.6f}"
    )
    lines.append(f"orchestration (AWS requests): {_orchestration(t)}")
    lines.append(f"restart tax avoided: {tax.seconds:.1f} s of compute, ${tax.usd:.6f}")
    if view.forked_from:
        f = view.forked_from
        lines.append(
            f"forked from run {f['run_id']} at {f['node']} (iteration {f['iteration']}): rows 'copied' ran there"
        )
    for c in view.children:  # child runs of call/parallel nodes (their cost is in the totals above)
        lines.append(f"child {c['run_id']} ({c['workflow']}) of {c['node']}/{c['branch']}: {c['status']}")
    if view.error:
        lines.append(f"error: {view.error.get('node')}: {view.error.get('type')}: {view.error.get('message')}")
    return "\n".join(lines)


def _orchestration(t: dict[str, Any]) -> str:
    """``$0.000012 (dynamodb $0.000010, s3 $0.000002; 8 ddb_write, ...)``: what durability cost."""
    services = ", ".join(f"{k} ${v:.6f}" for k, v in t.get("orchestration_by_service", {}).items())
    rq = t.get("requests", {})
    counted = ", ".join(f"{v} {k}" for k, v in rq.items())
    return f"${t.get('orchestration_usd', 0.0):.6f}" + (f" ({services}; {counted})" if rq else "")


def _origin(view: RunView) -> str:
    f = view.forked_from
    if not f:
        return ""
    where = f"{html.escape(str(f['node']))} (iteration {int(f['iteration'])})"
    return f"<p>Forked from run {html.escape(str(f['run_id']))} at {where}: its steps before that are copies.</p>"


def render_html(view: RunView) -> str:
    """One self-contained page: a row per node, a bar per invocation, crashes marked, a cost table."""
    t0, t1 = _span(view)
    span = max(1, t1 - t0)

    def pct(ms: int) -> float:
        return round(100 * (ms - t0) / span, 3)

    rows = []
    for label, n in _rows(view):
        bars = []
        for h in n.history:
            start, end = h["started_ms"], h["ended_ms"] or h["started_ms"]
            left, w = pct(start), max(0.4, pct(end) - pct(start))
            tip = f"{n.key}: {h['outcome']} {_ts(start)} to {_ts(end)} ({_dur(end - start)})"
            bars.append(
                f'<div class="bar" style="left:{left}%;width:{w}%;background:{_COLOR.get(h["outcome"], "#000")}"'
                f' title="{html.escape(tip)}"></div>'
            )
        info = (
            f"{n.status} · attempts {n.attempts} · invocations {n.invocations} · {_dur(n.duration_ms)}"
            f" · ${n.cost_usd + n.compute_usd:.6f}" + (" · resumed" if n.resumed else "")
        )
        rows.append(
            f'<tr><td class="name" title="{html.escape(info)}">{html.escape(label)}</td>'
            f'<td class="status s-{n.status}">{_status(n)}</td><td class="track">{"".join(bars)}</td></tr>'
        )
    marks = "".join(
        f'<div class="crash" style="left:{pct(c["at_ms"])}%" title="worker died: {html.escape(c["node"])} '
        f'({c["kind"]}) at {_ts(c["at_ms"])}; resumed from checkpoint"></div>'
        for c in view.crash_events
    )
    table = "".join(
        f"<tr><td>{html.escape(n.key)}</td><td>{n.status}</td><td>{n.attempts}</td><td>{n.invocations}</td>"
        f"<td>{n.crashes}</td><td>{n.checkpoint_hits}</td><td>{_dur(n.duration_ms)}</td>"
        f"<td>{n.input_tokens}/{n.output_tokens}</td><td>{n.cost_usd:.6f}</td><td>{n.compute_usd:.6f}</td>"
        f"<td>{n.orchestration_usd:.6f}</td></tr>"
        for n in view.nodes
    )
    legend = "".join(f'<span><i style="background:{c}"></i>{k}</span>' for k, c in _COLOR.items())
    t, tax = view.totals, view.restart_tax_avoided
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>stepchain run {view.run_id}</title>
<style>
body{{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}} h1{{font-size:18px}}
table{{border-collapse:collapse}} td,th{{padding:3px 8px;border-bottom:1px solid #eee;text-align:left}}
.timeline{{position:relative;width:100%}} .timeline td.track{{position:relative;width:70%;height:18px}}
.bar{{position:absolute;top:3px;height:12px;border-radius:2px;min-width:2px}}
.crash{{position:absolute;top:0;bottom:0;width:2px;background:#c62828;opacity:.8}}
.s-SUCCEEDED{{color:#2e7d32}} .s-FAILED{{color:#c62828}} .s-WAITING{{color:#8e24aa}}
.legend span{{margin-right:12px}} .legend i{{display:inline-block;width:10px;height:10px;margin-right:4px}}
.overlay{{position:relative}} .marks{{position:absolute;top:0;bottom:0;left:calc(30% + 0px);right:0}}
</style></head><body>
<h1>Run {view.run_id} · {html.escape(view.workflow)} · <span class="s-{view.status}">{view.status}</span></h1>
{_origin(view)}
<p>{t["succeeded"]}/{t["nodes"]} steps done · {t["invocations"]} invocations · {t["crashes"]} crash(es) recovered ·
{t["resumed_nodes"]} step(s) resumed from checkpoints · cost ${t["cost_usd"] + t["compute_usd"]:.6f} ·
<b>restart tax avoided: {tax.seconds:.1f} s, ${tax.usd:.6f}</b> · wall {_dur(t["wall_ms"])}</p>
<p>Orchestration (AWS requests, {html.escape(str(t.get("prices", "")))}): {html.escape(_orchestration(t))}</p>
<p class="legend">{legend}<span><i style="background:#c62828;width:2px"></i>worker died</span></p>
<div class="overlay"><table class="timeline">{"".join(rows)}</table><div class="marks">{marks}</div></div>
<h2>Ledger</h2>
<table><tr><th>step</th><th>status</th><th>attempts</th><th>invocations</th><th>crashes</th><th>checkpoint hits</th>
<th>compute</th><th>tokens in/out</th><th>recorded $</th><th>Lambda $</th><th>AWS requests $</th></tr>{table}</table>
<p>Times are UTC, {_ts(t0)} to {_ts(t1)}.</p>
</body></html>
"""
