// herald's operations dashboard: signs in once (the session cookie is
// HttpOnly; this script only keeps the CSRF token it is answered), then
// renders the fleet's figures from the server-sent event stream
// /dashboard/events (one `stats` event a second). Every value goes into
// the page as text, never as markup. uPlot (vendored, global `uPlot`)
// draws the two charts.

const $ = (selector) => document.querySelector(selector);
let csrf = null;
let source = null;
let charts = null;

const number = (n) => (n == null ? "–" : Number(n).toLocaleString("en-US", { maximumFractionDigits: 1 }));
const time = (t) => (t ? new Date(t).toLocaleTimeString() : "–");
const dateTime = (t) => (t ? new Date(t).toLocaleString() : "–");
const ago = (t) => {
  if (!t) return "–";
  const s = Math.max(0, (Date.now() - Date.parse(t)) / 1000);
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
};

// A table cell holding `text`; `cls` for its class, `data` for data-*.
function cell(text, cls, data) {
  const td = document.createElement("td");
  td.textContent = text == null ? "" : String(text);
  if (cls) td.className = cls;
  for (const [k, v] of Object.entries(data || {})) td.dataset[k] = v;
  return td;
}

function button(label, action, data) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.className = action;
  b.dataset.action = action;
  for (const [k, v] of Object.entries(data)) b.dataset[k] = v;
  return b;
}

// Replaces the rows of `tbody` with one row per item, made by `make`.
function rows(tbody, items, make) {
  const fresh = items.map((item) => {
    const tr = document.createElement("tr");
    make(item, tr);
    return tr;
  });
  tbody.replaceChildren(...fresh);
}

function show(signedIn) {
  $("#sign-in").hidden = signedIn;
  $("#app").hidden = !signedIn;
  $("#sign-out").hidden = !signedIn;
  if (!signedIn) $("#status").dataset.status = "signed-out";
  if (!signedIn) $("#status").textContent = "signed out";
}

async function api(method, path, body) {
  const headers = { "X-CSRF-Token": csrf || "" };
  if (body) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body ? JSON.stringify(body) : undefined,
    credentials: "same-origin",
  });
  let answer = {};
  try { answer = await response.json(); } catch { /* no body */ }
  return { status: response.status, answer };
}

async function checkSession() {
  const { status, answer } = await api("GET", "/dashboard/session");
  if (status === 200) {
    csrf = answer.csrf;
    start();
  } else {
    stop();
    show(false);
  }
}

function stop() {
  if (source) source.close();
  source = null;
}

function start() {
  show(true);
  stop();
  $("#status").dataset.status = "connecting";
  $("#status").textContent = "connecting";
  source = new EventSource("/dashboard/events");
  source.addEventListener("stats", (event) => {
    $("#status").dataset.status = "live";
    $("#status").textContent = "live";
    render(JSON.parse(event.data));
  });
  source.onerror = () => {
    $("#status").dataset.status = "stale";
    $("#status").textContent = "reconnecting";
    // Signed out (expired, or the key changed)? Then ask for the key.
    setTimeout(async () => {
      const { status } = await api("GET", "/dashboard/session");
      if (status === 401) { stop(); show(false); }
    }, 1000);
  };
  search();
}

function render(stats) {
  window.heraldStats = stats;
  const countsAge = (Date.parse(stats.at) - Date.parse(stats.counted_at)) / 1000;
  $("#updated").textContent = `updated ${time(stats.at)}` +
    (countsAge > 1.5 ? `; job counts as of ${time(stats.counted_at)} (counted less often while the backlog is large)` : "");
  $("#problems").textContent = stats.problems.join("; ");

  const fields = ["waiting", "scheduled", "running", "retrying", "dead", "done_last_minute", "failed_last_minute"];
  rows($("#kinds tbody"), stats.kinds, (k, tr) => {
    tr.dataset.kind = k.kind;
    const name = cell(k.kind);
    if (k.paused) {
      const badge = document.createElement("span");
      badge.className = "badge";
      badge.textContent = "paused";
      name.append(" ", badge);
    }
    tr.append(name);
    for (const f of fields) tr.append(cell(number(k[f]), "n", { field: f }));
    const td = document.createElement("td");
    td.append(k.paused ? button("Resume", "resume", { kind: k.kind }) : button("Pause", "pause", { kind: k.kind }));
    tr.append(td);
  });
  rows($("#kinds tfoot"), [stats.totals], (t, tr) => {
    tr.dataset.kind = "total";
    tr.append(cell("all"));
    for (const f of fields) tr.append(cell(number(t[f]), "n", { field: f }));
    tr.append(cell(""));
  });

  rows($("#dead tbody"), stats.dead, (job, tr) => {
    tr.dataset.jobId = job.id;
    tr.append(cell(job.id, "id"), cell(job.kind), cell(job.attempts, "n"), cell(dateTime(job.updated_at)),
      cell(job.last_error, "error"));
    const td = document.createElement("td");
    td.append(button("Retry", "retry", { id: job.id }), " ", button("Discard", "discard", { id: job.id }));
    tr.append(td);
  });
  $("#dead-none").hidden = stats.dead.length > 0;

  rows($("#scans tbody"), stats.scans, (s, tr) => {
    tr.dataset.scan = s.name;
    const name = cell(s.name);
    if (s.paused) name.append(" (paused)");
    tr.append(name, cell(s.schedule, "id"), cell(dateTime(s.last_run)), cell(s.last_run_by || "–", "id"),
      cell(s.last_created == null ? "–" : s.last_created, "n"), cell(dateTime(s.next_run)));
  });

  const layer = stats.layer;
  $("#layer-backend").textContent = `backend: ${layer.backend}` +
    (layer.shards.length ? "" : " (one process, no Redis)");
  rows($("#shards tbody"), layer.shards, (s, tr) => {
    tr.append(cell(s.host, "id"), cell(s.up ? "up" : "down", s.up ? "up" : "down"),
      cell(s.rtt_ms == null ? "–" : `${s.rtt_ms.toFixed(2)} ms`, "n"));
  });
  $("#outbox").textContent = `Outbox: ${number(layer.outbox.entries)} entries, ` +
    `${number(layer.outbox.notifications)} notifications waiting to be published` +
    (layer.outbox.oldest_overdue_seconds > 0 ? `, oldest overdue ${number(layer.outbox.oldest_overdue_seconds)} s` : "");

  const broker = stats.broker;
  $("#broker").hidden = !broker;
  if (broker) {
    const loops = broker.connected == null
      ? `${number(broker.loops)} ingress loops`
      : `${number(broker.connected)} of ${number(broker.loops)} ingress loops connected`;
    const state = $("#broker-state");
    state.textContent = `${broker.kind}: ${broker.reachable ? "reachable" : "unreachable"}; ${loops}` +
      (broker.reconnects ? `; ${number(broker.reconnects)} reconnects` : "");
    state.className = broker.reachable ? "up" : "down";
    rows($("#revoked tbody"), broker.revoked, (r, tr) => {
      tr.dataset.taskId = r.task_id;
      tr.append(cell(r.task_id, "id"), cell(dateTime(r.revoked_at)), cell(dateTime(r.expires_at)));
    });
    rows($("#broker-queues tbody"), broker.queues, (q, tr) => {
      tr.dataset.queue = q.name;
      tr.append(cell(q.name, "id"), cell(q.waiting == null ? "missing" : number(q.waiting), "n", { field: "waiting" }),
        cell(q.consumers == null ? "–" : number(q.consumers), "n", { field: "consumers" }));
    });
  }

  const d = stats.delivery;
  const closes = (map) => Object.entries(map).map(([code, n]) => `${code}: ${n}`).join(", ") || "–";
  $("#delivery-totals").textContent = `${number(d.connections)} connections, ${number(d.users_online)} users online, ` +
    `${number(d.deliveries_per_second)} deliveries/s, ${number(d.copies_dropped)} copies dropped, ` +
    `${number(d.copies_held)} held for a full channel (${number(d.copies_undelivered)} undelivered); close codes ${closes(d.closes)}`;
  rows($("#delivery tbody"), d.processes, (p, tr) => {
    tr.append(cell(p.id, "id"), cell(number(p.connections), "n"), cell(number(p.users_online), "n"),
      cell(number(p.deliveries_per_second), "n"), cell(number(p.delivered), "n"),
      cell(number(p.copies_dropped), "n"), cell(closes(p.closes)));
  });

  rows($("#processes tbody"), stats.processes, (p, tr) => {
    tr.dataset.processId = p.id;
    tr.dataset.role = p.role;
    tr.append(cell(p.id, "id"), cell(p.role), cell(p.host), cell(p.pid, "n"), cell(p.version),
      cell(dateTime(p.started_at)), cell(ago(p.seen_at)), cell(number(p.running), "n"),
      cell(number(p.jobs_per_second), "n"));
  });

  chart(stats.series);
  document.body.dataset.updated = stats.at;
  // The history follows along every few seconds (one indexed query).
  updates += 1;
  if (updates % 5 === 0) search();
}

let updates = 0;

function chart(series) {
  const xs = series.map((p) => Date.parse(p.at) / 1000);
  const throughput = [xs, series.map((p) => p.done_per_second), series.map((p) => p.failed_per_second)];
  const runtime = [xs, series.map((p) => p.p50_ms), series.map((p) => p.p99_ms)];
  if (typeof uPlot === "undefined") return;
  if (!charts) {
    const width = (id) => Math.max(300, $(id).clientWidth || 500);
    // Run times get points too: a lone window with jobs (its neighbours
    // have none) shows as a dot, not nothing.
    const options = (id, title, a, b, unit, dots) => ({
      width: width(id), height: 200,
      scales: { x: { time: true } },
      series: [{}, { label: a, stroke: "#2f5fb3", width: 2, spanGaps: false, points: { show: dots, size: 4 } },
        { label: b, stroke: "#b3261e", width: 2, spanGaps: false, points: { show: dots, size: 4 } }],
      axes: [{}, { label: unit, size: 60 }],
    });
    charts = {
      throughput: new uPlot(options("#chart-throughput", "", "done/s", "failed/s", "jobs/s", false), throughput, $("#chart-throughput")),
      runtime: new uPlot(options("#chart-runtime", "", "p50", "p99", "ms", true), runtime, $("#chart-runtime")),
    };
  } else {
    charts.throughput.setData(throughput);
    charts.runtime.setData(runtime);
  }
}

async function search(event) {
  if (event) event.preventDefault();
  const query = new URLSearchParams({ q: $("#history-q").value.trim(), kind: $("#history-kind").value, state: $("#history-state").value });
  const { status, answer } = await api("GET", `/dashboard/history?${query}`);
  if (status !== 200) return;
  rows($("#history tbody"), answer.jobs, (job, tr) => {
    tr.dataset.jobId = job.id;
    tr.dataset.state = job.state;
    tr.append(cell(job.id, "id"), cell(job.kind), cell(job.state, "", { field: "state" }), cell(job.attempts, "n"),
      cell(job.dedup_key || "", "id"), cell(dateTime(job.run_at)), cell(dateTime(job.updated_at)),
      cell(job.last_error || "", "error"));
    const td = document.createElement("td");
    const celery = (job.dedup_key || "").startsWith("celery:");
    // A Celery task's job is revoked (lasting, REVOKED written), not only cancelled.
    if (celery && job.state === "queued") td.append(button("Revoke", "revoke", { id: job.id }));
    else if (job.state === "queued" || job.state === "retrying") td.append(button("Cancel", "cancel", { id: job.id }));
    if (job.state === "dead") td.append(button("Retry", "retry", { id: job.id }));
    tr.append(td);
  });
}

// Every button: POST with the CSRF token; then the history is read again.
document.addEventListener("click", async (event) => {
  const target = event.target.closest("button[data-action]");
  if (!target) return;
  const { action, id, kind } = target.dataset;
  const path = id ? `/dashboard/jobs/${encodeURIComponent(id)}/${action}` : `/dashboard/kinds/${encodeURIComponent(kind)}/${action}`;
  target.disabled = true;
  const { status, answer } = await api("POST", path);
  target.disabled = false;
  if (status === 401) { stop(); show(false); return; }
  if (status !== 200) $("#problems").textContent = answer.error || `${action} failed (${status})`;
  search();
});

$("#sign-in").addEventListener("submit", async (event) => {
  event.preventDefault();
  const { status, answer } = await api("POST", "/dashboard/session", { key: $("#key").value });
  $("#key").value = "";
  if (status === 200) {
    csrf = answer.csrf;
    $("#sign-in-error").textContent = "";
    start();
  } else {
    $("#sign-in-error").textContent = answer.error || `sign-in failed (${status})`;
  }
});

$("#sign-out").addEventListener("click", async () => {
  await api("DELETE", "/dashboard/session");
  stop();
  csrf = null;
  show(false);
});

$("#history-form").addEventListener("submit", search);
for (const kind of ["deadline_reminder", "overdue_check", "file_attached", "status_changed", "notify"]) {
  const option = document.createElement("option");
  option.textContent = kind;
  $("#history-kind").append(option);
}

checkSession();
