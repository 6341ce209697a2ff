"""Cameras: ONVIF/RTSP ingest, recording, clips and snapshots (issue 4)."""
