"""The serial family's panel on the status page: each scale's last weight and the last scans, live.

Fed by the buffer's record listener (AgentContext.subscribe_records): what the page shows is
what was committed, so a weight on the page is a weight on its way to the centre. Registered
in agent/subsystems.py; the page knows only core.panels.Panel.
"""

from __future__ import annotations

import collections
import html
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from core.interfaces import AgentContext, Component, StoredRecord
from core.panels import Panel, Publish

LAST_SCANS = 10

SCRIPT = r"""
const fmtW = g => (g / 1000).toFixed(3) + ' kg';
const when = ms => new Date(ms).toLocaleTimeString();
function weight(d) {
  const row = el.querySelector(`tr[data-scale="${CSS.escape(d.scale)}"]`);
  if (!row) return;
  row.querySelector('.weight').textContent = fmtW(d.grams) + (d.net ? ' net' : '');
  row.querySelector('.weight').dataset.grams = d.grams;
  row.querySelector('.at').textContent = when(d.at);
}
function scan(d) {
  const li = document.createElement('li');
  li.className = 'scan';
  li.dataset.raw = d.raw;
  li.textContent = `${when(d.at)}  ${d.scanner}: ${d.raw}` + (d.gtin ? ` (GTIN ${d.gtin})` : '');
  const list = el.querySelector('.scans');
  list.prepend(li);
  while (list.children.length > 10) list.lastChild.remove();
}
coop.on('serial.weight', weight);
coop.on('serial.scan', scan);
coop.state('serial').then(s => { s.weights.forEach(weight); s.scans.slice().reverse().forEach(scan); });
"""


class LiveSerial:
    def __init__(self, publish: Publish) -> None:
        self.publish = publish
        self._lock = threading.Lock()
        self.weights: dict[str, dict[str, Any]] = {}
        self.scans: collections.deque[dict[str, Any]] = collections.deque(maxlen=LAST_SCANS)

    def on_records(self, records: list[StoredRecord]) -> None:
        for r in records:
            data = r["data"]
            if r["kind"] == "weight":
                w = {"scale": data.get("scale"), "grams": data.get("grams"), "net": bool(data.get("net")),
                     "at": r["at"]}
                with self._lock:
                    self.weights[str(w["scale"])] = w
                self.publish("serial.weight", w)
            elif r["kind"] == "scan":
                s = {"scanner": data.get("scanner", r["src"]), "raw": data.get("raw"), "gtin": data.get("gtin"),
                     "at": r["at"]}
                with self._lock:
                    self.scans.appendleft(s)
                self.publish("serial.scan", s)

    def state(self) -> Mapping[str, Any]:
        with self._lock:
            return {"weights": list(self.weights.values()), "scans": list(self.scans)}


def build(ctx: AgentContext, components: Sequence[Component], publish: Publish) -> Panel | None:
    cfg = ctx.config
    if not cfg.scales and not cfg.scanners:
        return None
    live = LiveSerial(publish)
    ctx.subscribe_records(live.on_records)
    rows = "".join(
        f'<tr data-scale="{html.escape(s.name)}"><td>{html.escape(s.name)}</td>'
        f'<td class="weight big" data-grams="">-</td><td class="at muted"></td></tr>' for s in cfg.scales)
    body = (f'<table class="scales"><tr><th>scale</th><th>last weight placed</th><th>at</th></tr>{rows}</table>'
            '<h2>Last scans</h2><ol class="scans"></ol>')
    return Panel("serial", "Scales and scanners", body, SCRIPT, state=live.state)
