"""Cameras: ONVIF/RTSP ingest, recording, clips and snapshots (issue 4). Map: docs/cameras.md."""

import os

# opencv writes its own warnings straight to stderr, outside our logging (one per failed
# open or read timeout of every camera); ours say the same in the journal, once.
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
