"""The technician's status page, served under /page on the local API's listener.

`routes.py` (the FastAPI router: the page, login, JSON, server-sent events, panel files),
`hub.py` (live events for the open pages), `history.py` (backlog and acked seq samples, the
broker link watch), `doctor.py` (the doctor's checks run in a thread), `html.py` (the page:
one template, a few hundred lines of plain JS, no CDN). The device families add their
panels through agent/subsystems.py (core.panels.Panel).
"""
