"""The page itself: one HTML template, its CSS and a few hundred lines of plain JS; nothing from a CDN.

The server renders the frame (device name, the families' panel fragments); the JS fills it
from /page/status, /page/history and /page/doctor, and keeps it live with the server-sent
events of /page/events (each `{"event", "data"}`: "link", "sample", "doctor", and the panels' own).
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence

from core.panels import Panel

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1d2330}
header{background:#1d2330;color:#fff;padding:.6em 1em;display:flex;gap:1em;align-items:center;flex-wrap:wrap}
header h1{font-size:1.1em;margin:0;flex:1}
main{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:1em;padding:1em}
section{background:#fff;border-radius:6px;padding:.8em 1em;box-shadow:0 1px 2px #0002}
section.wide{grid-column:1/-1}
h2{font-size:1em;margin:0 0 .5em}
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.15em .4em;vertical-align:top}
tr+tr td{border-top:1px solid #eee}
.pill{display:inline-block;padding:.1em .6em;border-radius:1em;font-weight:600;color:#fff;background:#888}
.ok,.good{background:#1a7f37}.degraded,.warning{background:#b35900}.down,.bad,.error{background:#c62828}
.skipped,.unknown{background:#888}
.big{font-size:2em;font-weight:700}.muted{color:#667}.fix{color:#8a3c00}
svg{width:100%;height:140px;background:#fafbfc;border:1px solid #eee}
.thumbs{display:flex;gap:.6em;flex-wrap:wrap}.thumbs figure{margin:0}
.thumbs img{width:320px;max-width:100%;min-height:60px;background:#222;display:block}
form.login{max-width:24em;margin:4em auto;background:#fff;padding:1.5em;border-radius:6px}
input[type=password]{width:100%;padding:.4em;margin:.4em 0 .8em;box-sizing:border-box}
button{padding:.35em .9em}
"""

LOGIN = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>coopagent {device}: sign in</title>
<style>{css}</style></head><body><form class="login" method="post" action="/page/login">
<h2>coopagent {device}</h2><p>The status page needs the local API token (the first line of
<code>{token_file}</code>; <code>sudo cat</code> it on the branch PC).</p>
<label>API token <input type="password" name="token" id="token" autocomplete="current-password" autofocus></label>
<p class="fix" id="login-error">{error}</p><button type="submit" id="login">Sign in</button></form></body></html>"""

CORE_JS = r"""
const coop = (() => {
  const handlers = {};
  const api = {
    on(ev, fn) { (handlers[ev] = handlers[ev] || []).push(fn); },
    async json(url, opts) { const r = await fetch(url, opts); if (r.status === 401) location.reload();
      if (!r.ok) throw new Error(url + ': ' + r.status); return r.json(); },
    state(name) { return api.json('/page/panels/' + encodeURIComponent(name) + '/state'); },
    file(name, key) { return '/page/panels/' + encodeURIComponent(name) + '/files/' + encodeURIComponent(key); },
    panel(name, fn) { const el = document.getElementById('panel-' + name);
      try { fn(el, api); } catch (e) { el.append('panel error: ' + e); } },
    fire(ev, data) { (handlers[ev] || []).forEach(fn => { try { fn(data); } catch (e) { console.error(e); } }); },
  };
  return api;
})();
const $ = id => document.getElementById(id);
const esc = s => String(s ?? '').replace(/[&<>"]/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));
const fmtTime = ms => new Date(ms).toLocaleTimeString();
const fmtBytes = n => n > 1e9 ? (n / 1e9).toFixed(1) + ' GB' : (n / 1e6).toFixed(0) + ' MB';

function showLink(link) {
  const el = $('link');
  el.className = 'pill ' + (link.connected ? 'good' : 'bad');
  el.textContent = link.connected ? 'connected' : 'disconnected';
  $('link-error').textContent = link.connected ? '' : (link.last_error || '');
}

function showStatus(s) {
  showLink(s.broker);
  current = [Date.now(), s.backlog.records, s.acked_seq, s.last_seq];
  drawCharts();
  $('broker-url').textContent = s.broker.url;
  $('components').innerHTML = Object.entries(s.components).sort()
    .map(([n, h]) => `<tr><td>${esc(n)}</td><td><span class="pill ${esc(h)}">${esc(h)}</span></td></tr>`).join('');
  $('backlog').textContent = s.backlog.records;
  $('backlog-detail').textContent = `${s.backlog.batches} batches, media ${fmtBytes(s.backlog.media_bytes)}; ` +
    `acked seq ${s.acked_seq} of ${s.last_seq}`;
  const skew = Math.round((Date.now() - s.at) / 1000);
  const sync = s.clock.synchronized;
  const [cls, word] = sync ? ['good', 'synchronized'] : sync === false ? ['bad', 'not synchronized'] : ['unknown', '?'];
  $('clock').innerHTML = `agent ${esc(new Date(s.at).toLocaleString())}; NTP <span class="pill ${cls}">${word}</span>` +
    (Math.abs(skew) > 5 ? ` <span class="fix">this browser is ${skew} s off the agent</span>` : '') +
    (s.clock.jumps ? ` <span class="muted">${s.clock.jumps} jumps</span>` : '');
  const d = s.disk;
  // level_index >= 2: below the reserve kept for records, media being deleted (docs/operations.md)
  const short = d.free_bytes / d.total_bytes < 0.1 || s.buffer.full || d.level_index >= 2;
  $('disk').innerHTML = `<span class="pill ${short ? 'bad' : 'good'}">` +
    `${fmtBytes(d.free_bytes)} free</span> of ${fmtBytes(d.total_bytes)} at ${esc(d.path)}` +
    (d.level && d.level !== 'ok' ? ` <b class="fix">disk ${esc(d.level)}</b>` : '') +
    (s.buffer.full ? ' <b class="fix">buffer full</b>' : '');
  $('updated').textContent = 'updated ' + fmtTime(Date.now());
}

let samples = [], current = null;  // current: the status just read, the chart's right end
function chart(svg, series) {
  // Drawn in the SVG's own pixels (no stretching of the labels); it ends with the status just read.
  const W = Math.max(svg.clientWidth, 200), H = 140, P = 4;
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  if (samples.length < 1) { svg.innerHTML = '<text x="10" y="20">no samples yet</text>'; return; }
  const pts = [...samples, current || [Date.now(), ...samples[samples.length - 1].slice(1)]];
  const t0 = pts[0][0], t1 = Math.max(pts[pts.length - 1][0], t0 + 1);
  const vals = series.flatMap(([i]) => pts.map(s => s[i]));
  const lo = Math.min(...vals), hi = Math.max(...vals, lo + 1);
  const x = t => P + (W - 2 * P) * (t - t0) / (t1 - t0), y = v => H - P - (H - 2 * P) * (v - lo) / (hi - lo);
  svg.innerHTML = series.map(([i, color, w]) =>
    `<polyline fill="none" stroke="${color}" stroke-width="${w || 2}" points="` +
    pts.map(s => `${x(s[0]).toFixed(1)},${y(s[i]).toFixed(1)}`).join(' ') + '"/>').join('') +
    `<text x="${P + 2}" y="14" font-size="12">${hi}</text><text x="${P + 2}" y="${H - 6}" font-size="12">${lo}</text>` +
    `<text x="${W - 8}" y="${H - 6}" font-size="12" text-anchor="end">` +
    `${esc(fmtTime(t0))} to ${esc(fmtTime(t1))}</text>`;
}
function drawCharts() {
  chart($('chart-backlog'), [[1, '#c62828']]);
  chart($('chart-seq'), [[2, '#1a7f37', 6], [3, '#1f5fbf']]);  // acked under last: a green edge shows
}

function showDoctor(d) {
  $('doctor-run').disabled = d.running;
  $('doctor-when').dataset.finished = d.finished_ms || '';
  $('doctor-when').textContent = d.running ? 'running...' :
    d.finished_ms ? `last run ${fmtTime(d.finished_ms)} (${d.took_s} s)` : 'not run yet';
  $('doctor').innerHTML = d.findings.map(f => `<tr class="finding" data-id="${esc(f.id)}">` +
    `<td><span class="pill ${esc(f.result)}">${esc(f.result)}</span></td><td><code>${esc(f.id)}</code></td>` +
    `<td>${esc(f.message)}${f.fix ? `<div class="fix">fix: ${esc(f.fix)}</div>` : ''}</td></tr>`).join('');
}

async function refresh() {
  try { showStatus(await coop.json('/page/status')); } catch (e) { $('updated').textContent = String(e); }
}
async function refreshDoctor() { showDoctor(await coop.json('/page/doctor')); }

$('doctor-run').onclick = async () => {
  $('doctor-run').disabled = true;
  await coop.json('/page/doctor/run', {method: 'POST'});
  refreshDoctor();
};
coop.on('link', showLink);
coop.on('sample', d => { samples.push(d.sample); drawCharts(); });
coop.on('doctor', () => refreshDoctor());

function connect() {
  const es = new EventSource('/page/events');
  es.onopen = () => { $('live').className = 'pill good'; $('live').textContent = 'live'; };
  es.onerror = () => { $('live').className = 'pill bad'; $('live').textContent = 'reconnecting'; };
  es.onmessage = m => { const d = JSON.parse(m.data); coop.fire(d.event, d.data); };
}
window.addEventListener('resize', drawCharts);
(async () => {
  refresh(); refreshDoctor();
  samples = (await coop.json('/page/history')).samples; drawCharts();
  setInterval(refresh, 5000);
  connect();
})();
"""

PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><title>coopagent {device}</title>
<style>{css}</style></head><body>
<header><h1>coopagent <b>{device}</b> <span class="muted">{version}</span></h1>
<span id="updated" class="muted"></span><span id="live" class="pill unknown">connecting</span>
<form method="post" action="/page/logout"><button type="submit">Sign out</button></form></header>
<main>
<section id="broker-panel"><h2>Broker link</h2><p><span id="link" class="pill unknown">?</span>
<span id="broker-url" class="muted"></span></p><p id="link-error" class="fix"></p></section>
<section><h2>Backlog</h2><div><span id="backlog" class="big">?</span> records not yet acked by the centre</div>
<div id="backlog-detail" class="muted"></div></section>
<section><h2>Clock</h2><p id="clock"></p><h2>Disk</h2><p id="disk"></p></section>
<section><h2>Components</h2><table id="components"></table></section>
<section class="wide"><h2>Backlog (red) and acked seq (green) / last seq (blue), last hours</h2>
<svg id="chart-backlog" role="img" aria-label="backlog"></svg>
<svg id="chart-seq" role="img" aria-label="seq"></svg></section>
{panels}
<section class="wide" id="doctor-panel"><h2>Doctor <button id="doctor-run" type="button">Run the checks now</button>
<span id="doctor-when" class="muted"></span></h2><table id="doctor"></table></section>
</main>
<script>{js}</script>
{panel_scripts}
</body></html>"""


def login_page(device: str, token_file: str, error: str = "") -> str:
    return LOGIN.format(css=CSS, device=html.escape(device), token_file=html.escape(token_file),
                        error=html.escape(error))


def status_page(device: str, version: str, panels: Sequence[Panel]) -> str:
    sections = "\n".join(
        f'<section class="wide family" id="panel-{html.escape(p.name)}">'
        f"<h2>{html.escape(p.title)}</h2>{p.html}</section>" for p in panels)
    scripts = "\n".join(
        f"<script>coop.panel({_js_str(p.name)}, function (el, coop) {{\n{p.script}\n}});</script>"
        for p in panels if p.script)
    return PAGE.format(css=CSS, device=html.escape(device), version=html.escape(version), panels=sections,
                       js=CORE_JS, panel_scripts=scripts)


def _js_str(s: str) -> str:
    """A JS string literal safe inside <script> (no </script> can close it)."""
    return json.dumps(s).replace("<", "\\u003c")
