"""The camera family's panel on the status page: each camera's latest frame as a small JPEG.

The thumbnail is the grabber's newest judged frame (the sub stream it already decodes for
liveness and tamper), scaled to THUMB_WIDTH; encoded at most once per frame, however many
pages ask. No fresh frame (camera offline, stale): 404 and the page says so. Registered in
agent/subsystems.py; the page knows only core.panels.Panel.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from core.interfaces import AgentContext, Component
from core.panels import Panel, Publish

THUMB_WIDTH = 320
REFRESH_MS = 2000

SCRIPT = r"""
async function refresh(fig) {
  const img = fig.querySelector('img'), cap = fig.querySelector('figcaption .state');
  try {
    const r = await fetch(coop.file('camera', fig.dataset.camera) + '?t=' + Date.now());
    if (!r.ok) { cap.textContent = 'no picture (' + r.status + ')'; cap.className = 'state pill bad'; return; }
    const url = URL.createObjectURL(await r.blob());
    const old = img.src;
    img.onload = () => { if (old.startsWith('blob:')) URL.revokeObjectURL(old); };
    img.src = url;
    img.dataset.refreshed = Date.now();
    cap.textContent = 'live ' + new Date().toLocaleTimeString(); cap.className = 'state pill good';
  } catch (e) { cap.textContent = String(e); cap.className = 'state pill bad'; }
}
el.querySelectorAll('figure[data-camera]').forEach(fig => {
  refresh(fig);
  setInterval(() => refresh(fig), REFRESH_MS);
});
""".replace("REFRESH_MS", str(REFRESH_MS))


class Thumbnails:
    def __init__(self, grabbers: Mapping[str, Any]) -> None:
        self.grabbers = grabbers  # name -> drivers.camera.grabber.FrameGrabber
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, bytes]] = {}

    def file(self, name: str) -> tuple[bytes, str] | None:
        grabber = self.grabbers.get(name)
        got = grabber.latest() if grabber is not None else None
        if got is None:
            return None
        at, frame = got
        with self._lock:
            cached = self._cache.get(name)
            if cached is not None and cached[0] == at:
                return cached[1], "image/jpeg"
        import cv2  # the family's own dependency, loaded only when cameras are configured

        h, w = frame.shape[:2]
        small = cv2.resize(frame, (THUMB_WIDTH, max(1, h * THUMB_WIDTH // w)), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 75])
        if not ok:
            return None
        jpeg = buf.tobytes()
        with self._lock:
            self._cache[name] = (at, jpeg)
        return jpeg, "image/jpeg"

    def state(self) -> Mapping[str, Any]:
        return {"cameras": [{"name": n, "online": g.online, "frames": g.frames} for n, g in self.grabbers.items()]}


def build(ctx: AgentContext, components: Sequence[Component], publish: Publish) -> Panel | None:
    if not ctx.config.cameras:
        return None
    from drivers.camera.grabber import FrameGrabber

    grabbers = {c.cfg.name: c for c in components if isinstance(c, FrameGrabber)}
    if not grabbers:
        return None
    thumbs = Thumbnails(grabbers)
    figures = "".join(
        f'<figure data-camera="{html.escape(n)}"><img alt="{html.escape(n)}">'
        f'<figcaption>{html.escape(n)} <span class="state pill unknown">waiting</span></figcaption></figure>'
        for n in grabbers)
    return Panel("camera", "Cameras", f'<div class="thumbs">{figures}</div>', SCRIPT,
                 state=thumbs.state, files=thumbs.file)
