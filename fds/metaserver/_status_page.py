"""The metaserver's status page (``GET /`` and ``GET /status``): the cluster at a glance, in a browser.

One self-contained HTML page (inline CSS and script, nothing fetched from
elsewhere: clusters often have no internet). Its script fetches
``/v1/cluster`` every 2 seconds (``?refresh=SECONDS`` changes that) with the
browser's cookies, so a browser holding an ``fds_token`` cookie with a read
token sees it, and draws:

- one coloured banner: healthy, recovering, unhealthy, waiting for servers,
  or why the page cannot tell (no credentials, metaserver unreachable);
- the table version, replication level, rows, servers alive, bytes stored
  and free;
- recovery in progress: rows filling and under-replicated, bytes copied,
  time since the cluster became unhealthy;
- throughput: request and response body bytes per second over every tract
  server, from the request counters their heartbeats carry
  (:class:`fds.models.Traffic`) between two heartbeats;
- one row per tract server: id, URL, state, heartbeat age, rows (filling),
  tracts, bytes stored, disk use, its own throughput.

Everything the cluster reports reaches the page through ``textContent``,
never as markup, and the Content-Security-Policy admits only this page's
own script and style (by hash) and requests to this origin.
"""

from __future__ import annotations

import base64
import hashlib

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

__all__ = ["router"]

_STYLE = """
:root { --ok: #1a7f37; --warn: #b35900; --bad: #c62828; --idle: #57606a; --line: #d0d7de; --soft: #f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328;
       background: #fff; }
header { display: flex; align-items: baseline; gap: 1em; padding: 10px 20px; border-bottom: 1px solid var(--line); }
header h1 { font-size: 18px; margin: 0; }
header .where { color: var(--idle); font-family: ui-monospace, monospace; }
header .updated { margin-left: auto; color: var(--idle); font-size: 12px; }
main { padding: 14px 20px 30px; }
#health { border-radius: 8px; padding: 14px 18px; color: #fff; background: var(--idle); margin-bottom: 14px; }
#health .word { font-size: 26px; font-weight: 700; letter-spacing: .04em; }
#health .why { font-size: 15px; margin-left: .8em; }
#health[data-health=healthy] { background: var(--ok); }
#health[data-health=recovering] { background: var(--warn); }
#health[data-health=unhealthy] { background: var(--bad); }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin-bottom: 14px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 8px 14px; min-width: 120px;
        background: var(--soft); }
.card .label { font-size: 11px; text-transform: uppercase; letter-spacing: .05em; color: var(--idle); }
.card .value { font-size: 20px; font-weight: 600; font-variant-numeric: tabular-nums; }
.card.wide { flex: 1 1 320px; }
.card svg { display: block; width: 100%; height: 34px; margin-top: 4px; }
.card svg .in { stroke: #0969da; } .card svg .out { stroke: #8250df; }
.card svg polyline { fill: none; stroke-width: 1.5; }
.legend-in { color: #0969da; } .legend-out { color: #8250df; }
#recovery.active { border-color: var(--warn); background: #fff8f0; }
.bar { position: relative; height: 10px; background: #e6e9ed; border-radius: 5px; overflow: hidden; min-width: 90px; }
.bar > span { position: absolute; inset: 0 auto 0 0; background: #0969da; }
.bar.high > span { background: var(--warn); } .bar.full > span { background: var(--bad); }
.progress > span { background: var(--warn); }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); white-space: nowrap; }
th { font-size: 11px; text-transform: uppercase; letter-spacing: .05em; color: var(--idle); background: var(--soft); }
td.num, th.num { text-align: right; }
td.url { font-family: ui-monospace, monospace; font-size: 12px; }
td .small { color: var(--idle); font-size: 11px; }
.badge { display: inline-block; padding: 0 7px; border-radius: 9px; color: #fff; font-size: 12px; font-weight: 600; }
.badge.active { background: var(--ok); } .badge.dead { background: var(--bad); }
.badge.silent, .badge.decommissioning { background: var(--warn); } .badge.decommissioned { background: var(--idle); }
tr.down td { background: #fff0f0; }
.diskbar { display: flex; align-items: center; gap: 8px; }
.diskbar .text { font-size: 12px; color: var(--idle); }
#problem { color: var(--bad); margin: 0 0 10px; }
"""

_BODY = """
<header><h1>fds cluster</h1><span class="where" id="where"></span>
<span class="updated" id="updated">loading…</span></header>
<main>
<div id="health" data-health="loading"><span class="word">LOADING</span><span class="why"></span></div>
<p id="problem" hidden></p>
<div class="cards">
  <div class="card"><div class="label">TLT version</div><div class="value" id="tlt-version">–</div></div>
  <div class="card"><div class="label">replicas (k)</div><div class="value" id="replicas">–</div></div>
  <div class="card"><div class="label">rows</div><div class="value" id="rows">–</div></div>
  <div class="card"><div class="label">servers alive</div><div class="value" id="alive">–</div></div>
  <div class="card"><div class="label">stored</div><div class="value" id="stored">–</div></div>
  <div class="card"><div class="label">free</div><div class="value" id="free">–</div></div>
  <div class="card wide" id="throughput"><div class="label">throughput, all tract servers
    (<span class="legend-in">in</span> / <span class="legend-out">out</span>)</div>
    <div class="value"><span class="legend-in" id="rate-in">–</span> /
      <span class="legend-out" id="rate-out">–</span></div>
    <svg viewBox="0 0 120 34" preserveAspectRatio="none"><polyline class="in" id="spark-in" points=""/>
      <polyline class="out" id="spark-out" points=""/></svg></div>
  <div class="card wide" id="recovery"><div class="label">recovery</div>
    <div class="value" id="recovery-summary">–</div><div id="recovery-detail"></div></div>
</div>
<table id="servers"><thead><tr>
  <th>server</th><th>url</th><th>state</th><th class="num">heartbeat</th><th class="num">rows (filling)</th>
  <th class="num">tracts</th><th class="num">stored</th><th>disk</th><th class="num">in / out</th>
</tr></thead><tbody></tbody></table>
</main>
"""

_SCRIPT = r"""
"use strict";
const params = new URLSearchParams(location.search);
const REFRESH = Math.min(60, Math.max(0.5, Number(params.get("refresh")) || 2));
const HISTORY = 60;
const $ = (id) => document.getElementById(id);
const samples = new Map();   // server id -> {t, bytesIn, bytesOut, rateIn, rateOut}
const history = [];          // [rateIn, rateOut] per refresh, for the sparkline
$("where").textContent = location.host;

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n.toFixed(0) : n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0)) + " " + units[i];
}
const rate = (n) => n === null ? "–" : bytes(n) + "/s";
function seconds(s) {
  if (s === null || s === undefined) return "never";
  if (s < 60) return s.toFixed(1) + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + Math.floor(s % 60) + " s";
  return (s / 3600).toFixed(1) + " h";
}
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}
function bar(fraction, extra) {
  const f = Math.max(0, Math.min(1, fraction || 0));
  const span = el("span");
  span.style.width = (100 * f).toFixed(1) + "%";
  const cls = "bar" + (extra ? " " + extra : "") + (f > 0.95 ? " full" : f > 0.8 ? " high" : "");
  return el("div", {class: cls}, span);
}

// Rates from the counters heartbeats carry: each sample is dated by its heartbeat, not by our fetch.
function measure(server, now) {
  const t = now - (server.heartbeat_age ?? 0);
  const traffic = server.traffic || {bytes_in: 0, bytes_out: 0};
  const last = samples.get(server.id);
  const next = {t, bytesIn: traffic.bytes_in, bytesOut: traffic.bytes_out, rateIn: null, rateOut: null};
  if (last && server.alive) {
    const dt = t - last.t;
    if (traffic.bytes_in < last.bytesIn || traffic.bytes_out < last.bytesOut) {
      // restarted: counters began again from 0
    } else if (dt > 0.05) {
      next.rateIn = (traffic.bytes_in - last.bytesIn) / dt;
      next.rateOut = (traffic.bytes_out - last.bytesOut) / dt;
    } else {
      Object.assign(next, last);  // no heartbeat since the last look: keep the last figures
    }
  }
  samples.set(server.id, next);
  return next;
}

function spark(id, values, top) {
  const step = 120 / (HISTORY - 1);
  const start = HISTORY - values.length;
  $(id).setAttribute("points", values.map((v, i) =>
    ((start + i) * step).toFixed(1) + "," + (33 - 31 * (v / top)).toFixed(1)).join(" "));
}

function downText(down) {
  return down.length + (down.length === 1 ? " server down: " : " servers down: ") + down.map((s) => s.id).join(", ");
}

function renderHealth(status) {
  const rec = status.recovery;
  const servers = status.servers;
  const down = servers.filter((s) => !s.alive && s.state !== "decommissioned");
  let health, word, why;
  if (status.state !== "ready") {
    health = "waiting"; word = "WAITING";
    why = servers.length + " of " + status.expected_servers + " tract servers registered; the table is built " +
          "once all have";
  } else if (status.healthy) {
    health = "healthy"; word = "HEALTHY";
    why = "every row has " + status.replicas + " live, complete " + (status.replicas === 1 ? "copy" : "copies");
    if (down.length) why += " · " + downText(down);
  } else {
    health = rec && rec.rows_filling > 0 ? "recovering" : "unhealthy";
    word = health.toUpperCase();
    const parts = [];
    if (rec) parts.push(rec.rows_under_replicated + " of " + status.rows + " rows under-replicated");
    if (rec && rec.rows_filling) parts.push(rec.rows_filling + " rows filling");
    if (down.length) parts.push(downText(down));
    why = parts.join(" · ");
  }
  const banner = $("health");
  banner.dataset.health = health;
  banner.querySelector(".word").textContent = word;
  banner.querySelector(".why").textContent = why;
}

function renderRecovery(status, serverNow) {
  const rec = status.recovery;
  const box = $("recovery");
  const detail = $("recovery-detail");
  detail.replaceChildren();
  const active = rec && (rec.rows_filling > 0 || rec.rows_under_replicated > 0);
  box.classList.toggle("active", Boolean(active));
  if (!rec) { $("recovery-summary").textContent = "–"; return; }
  if (!active) {
    $("recovery-summary").textContent = "none in progress";
    if (rec.last_seconds !== null) detail.append("last repair took " + seconds(rec.last_seconds));
    return;
  }
  const elapsed = rec.started !== null ? Math.max(0, serverNow - rec.started) : null;
  $("recovery-summary").textContent = rec.rows_under_replicated + " rows under-replicated, " +
    (rec.rows_filling ? rec.rows_filling + " filling" : "no copy under way") +
    (elapsed !== null ? " · for " + seconds(elapsed) : "");
  const fraction = rec.bytes_total ? rec.bytes_done / rec.bytes_total : 0;
  detail.append(bar(fraction, "progress"), el("div", {class: "small"},
    bytes(rec.bytes_done) + " of " + bytes(rec.bytes_total) + " copied · " + rec.tracts_done + " of " +
    rec.tracts_total + " tracts"));
}

function stateOf(s) {
  if (s.state === "active" && !s.alive) return "silent";
  return s.state;
}

function render(status, serverNow) {
  const now = performance.now() / 1000;
  renderHealth(status);
  $("tlt-version").textContent = status.table_version;
  $("replicas").textContent = status.replicas;
  $("rows").textContent = status.rows;
  const servers = status.servers;
  $("alive").textContent = servers.filter((s) => s.alive).length + " / " + servers.length;
  $("stored").textContent = bytes(servers.reduce((a, s) => a + s.bytes_used, 0));
  $("free").textContent = bytes(servers.filter((s) => s.alive).reduce((a, s) => a + s.disk_free, 0));
  renderRecovery(status, serverNow);
  let totalIn = null, totalOut = null;
  const rows = servers.map((s) => {
    const m = measure(s, now);
    if (m.rateIn !== null) { totalIn = (totalIn || 0) + m.rateIn; totalOut = (totalOut || 0) + m.rateOut; }
    const state = stateOf(s);
    const used = s.bytes_used, room = s.bytes_used + s.disk_free;
    const tr = el("tr", {"data-server-id": s.id, "data-alive": s.alive, class: s.alive ? "up" : "down"},
      el("td", {class: "id"}, s.id, ...(s.domain !== s.id ? [el("div", {class: "small"}, s.domain)] : [])),
      el("td", {class: "url"}, s.url),
      el("td", {class: "state"}, el("span", {class: "badge " + state}, state)),
      el("td", {class: "num heartbeat"}, seconds(s.heartbeat_age)),
      el("td", {class: "num rows"}, s.rows + (s.filling_rows ? " (" + s.filling_rows + ")" : "")),
      el("td", {class: "num tracts"}, s.tracts),
      el("td", {class: "num stored", "data-bytes": used}, bytes(used)),
      el("td", {class: "disk"}, el("div", {class: "diskbar"}, bar(room ? used / room : 0),
        el("span", {class: "text"}, bytes(s.disk_free) + " free"))),
      el("td", {class: "num traffic"}, rate(m.rateIn) + " / " + rate(m.rateOut)));
    return tr;
  });
  $("servers").tBodies[0].replaceChildren(...rows);
  const box = $("throughput");
  box.dataset.bytesInPerS = totalIn === null ? "" : totalIn.toFixed(0);
  box.dataset.bytesOutPerS = totalOut === null ? "" : totalOut.toFixed(0);
  $("rate-in").textContent = rate(totalIn);
  $("rate-out").textContent = rate(totalOut);
  if (totalIn !== null) {
    history.push([totalIn, totalOut]);
    if (history.length > HISTORY) history.shift();
  }
  if (history.length > 1) {
    const top = Math.max(1, ...history.map(([a, b]) => Math.max(a, b)));
    spark("spark-in", history.map((h) => h[0]), top);
    spark("spark-out", history.map((h) => h[1]), top);
  }
}

function problem(word, text) {
  const banner = $("health");
  banner.dataset.health = "unknown";
  banner.querySelector(".word").textContent = word;
  banner.querySelector(".why").textContent = text;
}

async function refresh() {
  try {
    const resp = await fetch("/v1/cluster", {credentials: "same-origin", cache: "no-store",
                                             headers: {accept: "application/json"}});
    if (resp.status === 401 || resp.status === 403) {
      let message = "";
      try { message = (await resp.json()).error.message; } catch (e) { /* not our error body */ }
      problem("NOT AUTHORIZED", "this page needs a cookie fds_token holding a read token " +
              "(fds token --scope read)" + (message ? ": " + message : ""));
    } else if (!resp.ok) {
      problem("ERROR", "GET /v1/cluster answered " + resp.status);
    } else {
      const status = await resp.json();
      // The server's clock, for "under-replicated for N s": ours, unless the Date header (whole seconds)
      // says the two disagree by more than that rounding.
      const date = Date.parse(resp.headers.get("date") || "") / 1000;
      const skew = Number.isNaN(date) || Math.abs(date - Date.now() / 1000) < 2 ? 0 : date - Date.now() / 1000;
      render(status, Date.now() / 1000 + skew);
      $("updated").textContent = "updated " + new Date().toLocaleTimeString() + " · every " + REFRESH + " s";
      document.body.dataset.loaded = "1";
    }
  } catch (e) {
    problem("UNREACHABLE", "cannot reach the metaserver: " + e);
  } finally {
    setTimeout(refresh, REFRESH * 1000);
  }
}
refresh();
"""


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


_PAGE = ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
         "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
         "<link rel=\"icon\" href=\"data:,\">"
         f"<title>fds status</title><style>{_STYLE}</style></head>"
         f"<body>{_BODY}<script>{_SCRIPT}</script></body></html>\n").encode()

_HEADERS = {
    # Only this page's own script and style run, and it may talk to this origin only.
    "content-security-policy": f"default-src 'none'; script-src {_sha256(_SCRIPT)}; style-src {_sha256(_STYLE)}; "
                               "connect-src 'self'; img-src data:; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}

router = APIRouter(tags=["ops"])


@router.get("/", response_class=HTMLResponse,
            summary="The status page: servers and their health, disk use, the table version, recovery, throughput.")
@router.get("/status", response_class=HTMLResponse, include_in_schema=False)
async def status_page() -> HTMLResponse:
    return HTMLResponse(_PAGE, headers=_HEADERS)
