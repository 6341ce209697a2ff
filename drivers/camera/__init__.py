"""Cameras: ONVIF/RTSP ingest, recording, clips and snapshots (issue 4). Map: docs/cameras.md."""

import os

# agent.config imports our config module (AgentConfig has [[cameras]]); importing it first
# makes any import order work (drivers.camera.x first would otherwise meet a half-built module).
import agent.config  # noqa: F401

# opencv writes its own warnings straight to stderr, outside our logging (one per failed
# open or read timeout of every camera); ours say the same in the journal, once.
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
