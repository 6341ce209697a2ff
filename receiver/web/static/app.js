// Plain JS, no library: the record page watches its requests to the branch and reloads when one changes.
"use strict";
(function () {
  const box = document.getElementById("requests");
  if (!box || !box.dataset.poll || !box.querySelector("tr.request")) return;
  const seen = {};
  box.querySelectorAll("tr.request").forEach((tr) => { seen[tr.dataset.cid] = tr.dataset.state; });
  if (Object.values(seen).every((s) => s === "arrived" || s === "failed")) return;
  async function poll() {
    try {
      const r = await fetch(box.dataset.poll, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (r.status === 401) { window.location.reload(); return; }
      const body = await r.json();
      for (const q of body.requests) {
        if (seen[q.cid] !== q.state) { window.location.reload(); return; }
      }
    } catch (e) { /* the centre is restarting: try again */ }
    setTimeout(poll, 2000);
  }
  setTimeout(poll, 2000);
})();
