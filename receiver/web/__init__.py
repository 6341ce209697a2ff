"""The centre's evidence view: search, a record beside its clips, accounts, access log, compliance.

A FastAPI application with server-rendered Jinja2 pages and plain JS (no CDN), served by the
receiver's install (`coop-receiver web run`). It reads the receiver's store (never writes a
record) and keeps its own state (accounts, sessions, access log, clip requests) in
receiver/web/schema.py's tables. Imports only receiver/, wire/ and core/.
"""
