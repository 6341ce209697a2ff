"""Media files a killed agent left behind are removed at the next start (issue 13, kills).

add_media moves the file into the media dir and then commits its row; a SIGKILL between the
two left a file no row names: never announced, never sent, never counted in the quota, never
deleted. Real Store (SQLite, writer thread) and MediaStore."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from buffer.media import MediaStore
from buffer.store import Store
from wire.records import new_id

NOW = time.time_ns() // 1_000_000


def test_files_no_media_row_names_are_swept_and_nothing_else(tmp_path: Path, make_store: Callable[..., Store]) -> None:
    media_dir = tmp_path / "media"
    store = make_store()
    ms = MediaStore(store, media_dir, chunk_bytes=1024, quota_bytes=2**20)
    assert ms.swept == []
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\x00\x00\x00\x18ftypmp42" * 100)
    kept = ms.add_media(clip, camera="dock", media_type="video/mp4", start_ms=NOW - 1000, end_ms=NOW,
                        reason={"test": 1})
    orphan = f"{new_id().replace('-', '')}.mp4"  # moved in, then the agent died before COMMIT
    (media_dir / orphan).write_bytes(b"half of a clip")
    (media_dir / "holiday.jpg").write_bytes(b"not ours")  # [media] dir may be shared: not our name
    (media_dir / "notes.txt").write_bytes(b"not ours")
    restarted = MediaStore(store, media_dir, chunk_bytes=1024, quota_bytes=2**20)
    assert restarted.swept == [orphan]
    assert sorted(p.name for p in media_dir.iterdir()) == sorted([f"{kept}.mp4", "holiday.jpg", "notes.txt"])
