// stepchain live run view: plain JS, no build step. Data comes from the runs API through /api/
// (the local server proxies it). All reads go through `source`, so a progress stream
// (GET /runs/{id}/stream?after=) can replace polling without touching the rendering.
"use strict";

const STATUSES = ["PENDING", "RUNNING", "CONTINUING", "RETRYING", "SLEEPING", "WAITING", "FANNED_OUT",
  "SUCCEEDED", "FAILED", "CANCELLED"];
const FINISHED = new Set(["SUCCEEDED", "FAILED", "CANCELLED"]);
const $ = (id) => document.getElementById(id);
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));

async function api(method, path, body) {
  const init = {method, headers: {"Accept": "application/json"}};
  if (method !== "GET") {
    init.headers["X-Stepchain-UI"] = "1";  // the server refuses steering requests without it
    init.headers["Content-Type"] = "application/json";
    init.body = body === undefined ? "" : JSON.stringify(body);
  }
  const resp = await fetch("/api" + path, init);
  const text = await resp.text();
  const doc = text ? JSON.parse(text) : null;
  if (!resp.ok) {
    const err = (doc && doc.error) || {};
    throw new Error(`${resp.status} ${err.code || ""}: ${err.message || text}`);
  }
  return doc;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const LIFECYCLE = (kind) => kind.startsWith("node.") || kind.startsWith("run.");

// The data source: it tails the run's progress stream (GET /runs/{id}/stream?after=&wait_s=, a
// long-poll where the backend allows it) from its cursor `after`; a failed read (a reconnect) is
// retried from the same cursor, so no event is lost or shown twice. Lifecycle events (node.*, run.*)
// update the rows at once and trigger a read of the run view; while the stream has shown none (a
// workflow without lifecycle events) the run view is polled every poll_ms (with them, every
// 4 x poll_ms: a step's node.started is written with its first flush, so a RUNNING row comes from
// the view). When the run has ended, the stream is read once more (its run.* end event is written
// right after the run's transition) and both stop.
const source = {
  config: {poll_ms: 1000, stream: true, stream_wait_s: 0},
  mode: "polling",
  watch(runId, h) {
    let stopped = false, lifecycle = false, after = 0, reading = null, again = false;
    const cfg = this.config;
    const refresh = async () => {  // one read of the run view at a time; a request meanwhile: one more
      if (reading) { again = true; return reading; }
      reading = (async () => {
        let run = null;
        do {
          again = false;
          try {
            run = await api("GET", `/runs/${runId}`);
            if (!stopped) await h.onRun(run);
          } catch (e) { if (!stopped) h.onError(e); }
        } while (again && !stopped);
        reading = null;
        return run;
      })();
      return reading;
    };
    const poll = async () => {
      while (!stopped) {
        const run = await refresh();
        if (run && FINISHED.has(run.status)) return;
        await sleep(lifecycle ? cfg.poll_ms * 4 : cfg.poll_ms);
      }
    };
    const tail = async () => {
      let ended = 0;
      while (!stopped && ended < 2) {
        let page;
        const asked = Date.now();
        try {
          page = await api("GET", `/runs/${runId}/stream?after=${after}&limit=200&wait_s=${cfg.stream_wait_s}`);
        } catch (e) { if (!stopped) h.onError(e); await sleep(cfg.poll_ms); continue; }  // reconnect: same cursor
        if (stopped) return;  // a newer watch (after a steering action) owns the page now
        if (page.events.length) {
          after = page.next;
          const lc = page.events.some((e) => LIFECYCLE(e.kind));
          if (lc && !lifecycle) { lifecycle = true; this.mode = "stream"; }
          h.onEvents(page.events);
          if (lc) refresh();
        }
        if (page.finished && !page.events.length) ended += 1;
        // an empty page that came back at once (no long-poll here, or the run waits for an event or a
        // timer: the API answers those at once): pause before asking again
        const held = Date.now() - asked >= cfg.stream_wait_s * 500;
        if (!page.events.length) await sleep(page.finished ? 300 : (held ? 0 : cfg.poll_ms));
      }
    };
    poll();
    if (cfg.stream) tail();
    return () => { stopped = true; };
  },
};

const fmtMs = (ms) => ms == null ? "" : ms < 1000 ? `${ms} ms` : ms < 120000 ? `${(ms / 1000).toFixed(1)} s` : `${(ms / 60000).toFixed(1)} min`;
const fmtUsd = (u) => u ? `$${u.toFixed(u < 0.01 ? 6 : 4)}` : "";
const stepPath = (n) => n.iteration ? `${n.node}~${String(n.iteration).padStart(5, "0")}` : n.node;

const state = {runId: null, run: null, selected: null, expanded: new Set(), childViews: {}, stop: null,
  live: {}, each: {}, events: [], forkFrom: null};

// what a lifecycle event says of its node's status (until the next read of the run view)
const EVENT_STATUS = {"node.started": "RUNNING", "node.succeeded": "SUCCEEDED", "node.failed": "FAILED",
  "node.retrying": "RETRYING", "node.continued": "CONTINUING", "node.cancelled": "CANCELLED",
  "node.fanned_out": "FANNED_OUT", "node.child_started": "WAITING"};

function progress(n, children) {
  const parts = [];
  if (n.items && n.items.length) {
    parts.push(`${n.items.filter((i) => i.status === "SUCCEEDED").length}/${n.items.length} items`);
  }
  if (children.length) {
    parts.push(`${children.filter((c) => c.status === "SUCCEEDED").length}/${children.length} child runs`);
  }
  const each = state.each[n.key];
  if (each) parts.push(`each: ${each.done}/${each.total}`);
  else if (n.items_checkpointed) parts.push(`each: ${n.items_checkpointed} checkpointed`);
  return parts.join(", ");
}

function bar(n, t0, t1) {
  if (n.started_ms == null || n.copied_from) return `<div class="track"></div>`;  // a copy ran in the source run
  const span = Math.max(1, t1 - t0);
  const left = Math.max(0, (n.started_ms - t0) / span * 100);
  const end = n.ended_ms ?? t1;
  const width = Math.max(0.3, (end - n.started_ms) / span * 100);
  const crashes = (n.history || []).filter((h) => h.outcome === "crashed" && h.ended_ms)
    .map((h) => `<span class="crash" style="left:${((h.ended_ms - t0) / span * 100).toFixed(2)}%" title="worker lost"></span>`).join("");
  return `<div class="track"><div class="bar" data-status="${esc(n.status)}" style="left:${left.toFixed(2)}%;width:${Math.min(width, 100 - left).toFixed(2)}%"
    title="${esc(n.invocations)} invocation(s), ${esc(n.attempts)} attempt(s)"></div>${crashes}</div>`;
}

function nodeRow(runId, view, depth, t0, t1, children) {
  const key = `${runId}/${view.key}`;
  const live = runId === state.runId ? state.live[view.key] : undefined;
  const n = live ? {...view, status: live} : view;
  const sel = state.selected === key ? " selected" : "";
  const dur = n.duration_ms || (n.started_ms != null && !n.ended_ms ? Math.max(0, t1 - n.started_ms) : 0);
  const copied = n.copied_from ? ` <span class="copied" title="copied from run ${esc(n.copied_from)}: not run here">copied</span>` : "";
  return `<tr class="node depth-${depth}${sel}" data-key="${esc(n.key)}" data-run="${esc(runId)}" data-status="${esc(n.status)}"
      data-step="${esc(stepPath(n))}" data-index="${n.index ?? ""}" data-node="${esc(n.node)}" data-iteration="${n.iteration || 0}">
    <td class="name">${esc(n.index != null ? `item ${n.index}` : n.key)}${n.route ? ` → ${esc(n.route)}` : ""}${copied}</td>
    <td>${esc(n.kind)}</td><td><span class="status" data-status="${esc(n.status)}">${esc(n.status)}</span></td>
    <td class="progress">${esc(progress(n, children))}</td><td>${bar(n, t0, t1)}</td>
    <td>${esc(fmtMs(dur))}</td><td>${esc(fmtUsd(n.cost_usd + n.compute_usd))}</td></tr>`;
}

function childRow(c, depth) {
  const open = state.expanded.has(c.run_id);
  return `<tr class="child depth-${depth}" data-child="${esc(c.run_id)}" data-status="${esc(c.status)}">
    <td class="name"><button type="button" class="expand" data-child="${esc(c.run_id)}">${open ? "▾" : "▸"}</button>
      child run <a href="/?run=${esc(c.run_id)}">${esc(c.run_id)}</a>${c.branch != null ? ` (${esc(c.branch)})` : ""}${c.generation ? ` gen ${esc(c.generation)}` : ""}</td>
    <td>${esc(c.workflow)}</td><td><span class="status" data-status="${esc(c.status)}">${esc(c.status)}</span></td>
    <td></td><td></td><td></td><td>${esc(fmtUsd((c.totals || {}).cost_usd))}</td></tr>`;
}

function rowsOf(run, depth, t0, t1) {
  const out = [];
  const kids = run.children || [];  // direct children; a redriven node has one generation per redrive
  for (const n of run.nodes) {
    const mine = kids.filter((c) => c.node === n.key);
    const latest = Math.max(0, ...mine.map((c) => c.generation || 0));
    out.push(nodeRow(run.run_id, n, depth, t0, t1, mine.filter((c) => (c.generation || 0) === latest)));
    for (const i of n.items || []) out.push(nodeRow(run.run_id, i, depth + 1, t0, t1, []));
    for (const c of mine) {
      out.push(childRow(c, depth + 1));
      const view = state.childViews[c.run_id];
      if (state.expanded.has(c.run_id) && view) out.push(...rowsOf(view, depth + 2, t0, t1));
    }
  }
  return out;
}

function axis(t0, t1) {
  const span = t1 - t0;
  $("axis").innerHTML = [0, 0.25, 0.5, 0.75, 1].map((f) => `<span style="left:${f * 100}%">${esc(fmtMs(Math.round(span * f)))}</span>`).join("");
}

async function renderRun(run) {
  state.run = run;
  state.live = {};  // the view is at least as new as the events seen before it was read
  for (const id of state.expanded) {  // expanded child runs refresh with their parent
    try { state.childViews[id] = await api("GET", `/runs/${id}`); } catch (e) { /* shown on next poll */ }
  }
  document.title = `${run.workflow} ${run.status} · stepchain`;
  $("run-workflow").textContent = run.workflow;
  $("run-id").textContent = run.run_id;
  $("run-status").textContent = run.status;
  $("run-status").dataset.status = run.status;
  const t = run.totals || {};
  $("run-summary").textContent = `${t.succeeded ?? 0}/${t.nodes ?? 0} nodes done · ${t.invocations ?? 0} invocations · ` +
    `${t.crashes ?? 0} crashes · cost ${fmtUsd((t.cost_usd || 0) + (t.compute_usd || 0) + (t.orchestration_usd || 0)) || "$0"}` +
    (run.redrives ? ` · ${run.redrives} redrive(s)` : "");
  $("run-error").hidden = !run.error;
  $("run-error").textContent = run.error ? JSON.stringify(run.error) : "";
  if (run.parent) {
    const parentId = run.parent.split("/")[0];
    $("run-parent").hidden = false;
    $("parent-link").href = `/?run=${parentId}`;
    $("parent-link").textContent = run.parent;
  }
  const origin = run.forked_from;
  $("run-forked").hidden = !origin;
  if (origin) {
    $("forked-link").href = `/?run=${origin.run_id}`;
    $("forked-link").textContent = origin.run_id;
    $("forked-at").textContent = origin.node + (origin.iteration ? ` (iteration ${origin.iteration})` : "");
  }
  const waiting = run.waiting_for;
  $("approve-box").hidden = !waiting;
  if (waiting) $("wait-event").textContent = waiting.event + (waiting.iteration ? ` (iteration ${waiting.iteration})` : "");
  $("btn-cancel").hidden = FINISHED.has(run.status);
  $("btn-redrive").hidden = run.status !== "FAILED";
  const t0 = run.created_ms;
  const t1 = run.ended_ms ?? Math.max(Date.now(), run.updated_ms);
  axis(t0, t1);
  $("rows").innerHTML = rowsOf(run, 0, t0, t1).join("");
  $("live").textContent = FINISHED.has(run.status) ? "finished"
    : source.mode === "stream" ? "live · progress stream" : `live · polling every ${source.config.poll_ms} ms`;
}

function renderRows() {
  const run = state.run;
  if (!run) return;
  const t0 = run.created_ms, t1 = run.ended_ms ?? Math.max(Date.now(), run.updated_ms);
  $("rows").innerHTML = rowsOf(run, 0, t0, t1).join("");
}

const MAX_TAIL = 200;

function onEvents(events) {
  for (const e of events) {
    if (e.node && EVENT_STATUS[e.kind]) state.live[e.node] = EVENT_STATUS[e.kind];
    if (e.node && e.kind === "node.waiting_for") state.live[e.node] = e.data && e.data.wake_at ? "SLEEPING" : "WAITING";
    if (e.node && e.kind === "node.each") state.each[e.node] = e.data;
  }
  state.events = state.events.concat(events).slice(-MAX_TAIL);
  $("stream-count").textContent = `${events[events.length - 1].seq} events`;
  $("stream-tail").innerHTML = state.events.slice().reverse().map((e) => `<li data-kind="${esc(e.kind)}" data-seq="${e.seq}">
    <code>#${e.seq}</code> <b>${esc(e.kind)}</b> ${esc(e.node || "run")} <span class="muted">${esc(new Date(e.at).toLocaleTimeString())}</span>
    ${e.data == null ? "" : `<code class="data">${esc(JSON.stringify(e.data)).slice(0, 300)}</code>`}</li>`).join("");
  renderRows();
}

function field(name, value, pre) {
  if (value === undefined || value === null || value === "") return "";
  const body = pre ? `<pre>${esc(typeof value === "string" ? value : JSON.stringify(value, null, 2))}</pre>` : esc(value);
  return `<dt>${esc(name)}</dt><dd>${body}</dd>`;
}

// Fork: from the node row last clicked, if it is a node of this run (not a map item, not a child run's)
function pickFork(tr) {
  const btn = $("btn-fork");
  state.forkFrom = null;
  btn.disabled = true;
  if (tr.dataset.run !== state.runId) { btn.title = "a child run's node: open the child run to fork it"; return; }
  if (tr.dataset.index !== "") { btn.title = "a map item: fork from its map node"; return; }
  if (tr.dataset.status === "PENDING") { btn.title = "this node has not run"; return; }
  state.forkFrom = {node: tr.dataset.node, iteration: Number(tr.dataset.iteration || 0), key: tr.dataset.key};
  btn.disabled = false;
  btn.title = "a new run from this node, the nodes before it copied";
  btn.textContent = `Fork from ${tr.dataset.key}`;
}

async function fork() {
  const from = state.forkFrom;
  if (!from) return;
  let edits = {};
  const text = $("fork-edits").value.trim();
  try { edits = text ? JSON.parse(text) : {}; }
  catch (e) { $("action-msg").textContent = `edits are not JSON: ${e.message}`; return; }
  if (edits === null || typeof edits !== "object" || Array.isArray(edits) || Object.keys(edits).some((k) => k !== "state" && k !== "input")) {
    $("action-msg").textContent = 'edits: an object with "state" and/or "input"';
    return;
  }
  $("action-msg").textContent = `fork from ${from.key}...`;
  try {
    const out = await api("POST", `/runs/${state.runId}/fork`, {node: from.node, iteration: from.iteration, ...edits});
    $("action-msg").innerHTML = `forked: <a href="/?run=${esc(out.run_id)}">${esc(out.run_id)}</a>`;
    location.href = `/?run=${encodeURIComponent(out.run_id)}`;
  } catch (e) { $("action-msg").textContent = `fork failed: ${e.message}`; }
}

async function showDetails(tr) {
  pickFork(tr);
  const runId = tr.dataset.run, step = tr.dataset.step, index = tr.dataset.index;
  state.selected = `${runId}/${tr.dataset.key}`;
  document.querySelectorAll("tr.selected").forEach((r) => r.classList.remove("selected"));
  tr.classList.add("selected");
  $("details").hidden = false;
  $("details-title").textContent = `${tr.dataset.key} (loading)`;
  try {
    const d = await api("GET", `/runs/${runId}/steps/${step}` + (index !== "" ? `?index=${index}` : ""));
    $("details-title").textContent = d.key;
    $("details-fields").innerHTML = [
      field("status", d.status), field("kind", d.kind), field("attempts", d.attempts),
      field("invocations", d.invocations), field("crashes", d.crashes), field("duration", fmtMs(d.duration_ms)),
      field("cost (step)", fmtUsd(d.cost_usd)), field("tokens", d.input_tokens || d.output_tokens ? `${d.input_tokens} in / ${d.output_tokens} out` : ""),
      field("copied from run", d.copied_from),
      field("waits for", d.event_name), field("wakes at", d.wake_at_ms ? new Date(d.wake_at_ms).toISOString() : ""),
      field("input", d.has_input ? (d.input_url ? `offloaded: ${d.input_url}` : (d.input_omitted || d.input)) : "", true),
      field("error", d.error, true),
      field("output", d.has_output ? (d.output_url ? `offloaded: ${d.output_url}` : d.output) : (d.output_omitted || ""), true),
      field("history", (d.history || []).map((h) => `${h.outcome} ${fmtMs((h.ended_ms || Date.now()) - h.started_ms)}`).join("\n"), true),
    ].join("");
  } catch (e) {
    $("details-title").textContent = tr.dataset.key;
    $("details-fields").innerHTML = field("error", e.message, true);
  }
}

async function steer(label, method, path, body) {
  $("action-msg").textContent = `${label}...`;
  try {
    const out = await api(method, path, body);
    $("action-msg").textContent = `${label}: ${out.status || "done"}`;
    if (state.stop) state.stop();  // a redriven run is live again
    state.events = [];
    state.stop = source.watch(state.runId, {onRun: renderRun, onEvents, onError});
  } catch (e) { $("action-msg").textContent = `${label} failed: ${e.message}`; }
}

function onError(e) { $("live").textContent = `error: ${e.message}`; }

function openRun(runId) {
  state.runId = runId;
  $("run-view").hidden = false;
  $("rows").addEventListener("click", (ev) => {
    const exp = ev.target.closest("button.expand");
    if (exp) {
      const id = exp.dataset.child;
      if (state.expanded.has(id)) state.expanded.delete(id); else state.expanded.add(id);
      return renderRun(state.run);
    }
    if (ev.target.closest("a")) return;
    const tr = ev.target.closest("tr.node");
    if (tr) showDetails(tr);
  });
  $("btn-approve").addEventListener("click", () => {
    let payload;
    try { payload = JSON.parse($("event-payload").value || "null"); }
    catch (e) { $("action-msg").textContent = `payload is not JSON: ${e.message}`; return; }
    const w = state.run.waiting_for;
    steer("approve", "POST", `/runs/${runId}/events/${w.event}` + (w.iteration ? `?iteration=${w.iteration}` : ""), payload);
  });
  $("btn-cancel").addEventListener("click", () => steer("cancel", "POST", `/runs/${runId}/cancel`));
  $("btn-redrive").addEventListener("click", () => steer("redrive", "POST", `/runs/${runId}/redrive`, {}));
  $("btn-fork").addEventListener("click", fork);
  $("legend").innerHTML = STATUSES.map((s) => `<li><span class="status" data-status="${s}">${s}</span></li>`).join("");
  $("live").textContent = "loading...";
  state.stop = source.watch(runId, {onRun: renderRun, onEvents, onError});
}

async function openList(params) {
  $("runs-view").hidden = false;
  const wf = params.get("workflow") || "", status = params.get("status") || "";
  $("wf-input").value = wf;
  const q = new URLSearchParams();
  if (wf) q.set("workflow", wf);
  if (status) q.set("status", status);
  try {
    const page = await api("GET", `/runs?${q}`);
    $("runs-body").innerHTML = page.runs.map((r) => `<tr><td><a href="/?run=${esc(r.run_id)}">${esc(r.run_id)}</a></td>
      <td>${esc(r.workflow)}</td><td><span class="status" data-status="${esc(r.status)}">${esc(r.status)}</span></td>
      <td>${esc(new Date(r.created_ms).toLocaleString())}</td><td>${esc(r.current || "")}</td></tr>`).join("");
    $("runs-msg").textContent = page.runs.length ? "" : "no runs";
  } catch (e) { $("runs-msg").textContent = e.message; }
}

async function main() {
  try { Object.assign(source.config, await (await fetch("/config.json")).json()); } catch (e) { /* defaults */ }
  $("source").textContent = `source: ${source.config.source || "?"}`;
  const params = new URLSearchParams(location.search);
  const run = params.get("run");
  if (run) openRun(run); else openList(params);
}

main();
