"""What one disk-policy pass costs while 8 cameras' rings hold an hour each (3,600 one-second
segments per camera, 28,800 files), and what a sale committed meanwhile waits.

A pass runs in the buffer's writer thread (buffer/diskpolicy.py), so its time is added to the
commit of the records in the same group. Real files on a tmpfs this script mounts (needs root):
segments of 4 KiB (their size does not change the listing, sorting or unlink cost much), a filler
file to put free space below the reserve, the real Store, MediaStore, Ring and RingReclaimer.

    .venv/bin/python -m bench.bench_diskpolicy [--passes 5] [--cameras 8] [--segments 3600]

Prints one JSON document; its raw results go to docs/bench-results/diskpolicy.json (bench/record.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench import record
from buffer.diskpolicy import DiskPolicy, Thresholds
from buffer.media import MediaStore
from buffer.store import Store
from buffer.writer import SealOptions
from drivers.camera.reclaim import RingReclaimer
from drivers.camera.ring import Ring, final_name
from wire.cose import Signer

MiB = 2**20
SEG_BYTES = 4096


def free_of(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def squeeze(mnt: Path, target: int) -> None:
    """Grow the filler until `target` bytes are free."""
    delta = free_of(mnt) - target
    with open(mnt / "filler", "ab") as f:
        while delta > 0:
            delta -= f.write(b"\0" * min(delta, MiB))


def sale(i: int) -> dict[str, Any]:
    return {"kind": "sale", "data": {"receipt": f"R-{i}", "till": "3", "currency": "KWD", "total": 1250,
                                     "lines": [{"gtin": "09506000134352", "qty": 1, "unit_price": 1250,
                                                "amount": 1250}]}}


def run(mnt: Path, passes: int, cameras: int, segments: int) -> dict[str, Any]:
    store = Store(mnt / "buffer.sqlite3", Signer(Ed25519PrivateKey.generate()),
                  SealOptions(device="coop-a/b1/agent-1", batch_max_records=500, batch_max_age_s=0.2,
                              max_payload_bytes=262144, max_db_bytes=0)).start()
    media = MediaStore(store, mnt / "media", 128 * 1024, 1024 * MiB)
    now = int(time.time() * 1000)
    rings = {}
    for c in range(cameras):
        ring = Ring(mnt / "recordings" / f"cam{c}", max_minutes=120, max_bytes=1 << 40)
        block = b"\1" * SEG_BYTES
        for i in range(segments):
            s = now - (segments - i) * 1000
            (ring.dir / final_name(s, s + 1000)).write_bytes(block)
        rings[f"cam{c}"] = ring
    reserve = 8 * MiB
    policy = DiskPolicy(store, media, Thresholds(2 * reserve, reserve))
    policy.register(RingReclaimer(rings, list, 1000))
    store.writer.on_disk_full = policy.on_disk_full
    # Sales from one till, one record a request, while the passes run.
    latencies: list[float] = []
    stop = threading.Event()

    def till() -> None:
        i = 0
        while not stop.is_set():
            t0 = time.perf_counter()
            store.submit([sale(i)], timeout=30)
            latencies.append(time.perf_counter() - t0)
            i += 1
            stop.wait(0.005)

    t = threading.Thread(target=till, daemon=True)
    t.start()
    pass_s: list[float] = []
    deleted: list[int] = []
    for _ in range(passes):
        squeeze(mnt, reserve - 256 * 1024)
        before = sum(c.files for c in policy.deleted.values())
        t0 = time.perf_counter()
        policy.check()
        pass_s.append(time.perf_counter() - t0)
        deleted.append(sum(c.files for c in policy.deleted.values()) - before)
    stop.set()
    t.join(timeout=30)
    # The listing and sorting alone (every segment of every ring, in the policy's order).
    list_s = []
    for _ in range(passes):
        t0 = time.perf_counter()
        n = store.call(lambda tx: len(policy._candidates(tx.conn, int(time.time() * 1000)))).result(60)
        list_s.append(time.perf_counter() - t0)
    store.close()
    lat = sorted(latencies)
    return {
        "cameras": cameras, "segments_per_camera": segments, "passes": passes,
        "pass_ms": [round(x * 1000, 1) for x in pass_s], "pass_ms_median": round(statistics.median(pass_s) * 1000, 1),
        "files_deleted_per_pass": deleted,
        "candidates_listed": n, "list_ms_median": round(statistics.median(list_s) * 1000, 1),
        "sale_commits": len(lat), "sale_ms_p50": round(lat[len(lat) // 2] * 1000, 2),
        "sale_ms_p99": round(lat[int(len(lat) * 0.99)] * 1000, 2), "sale_ms_max": round(lat[-1] * 1000, 2),
        "loadavg": os.getloadavg(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--passes", type=int, default=5)
    ap.add_argument("--cameras", type=int, default=8)
    ap.add_argument("--segments", type=int, default=3600)
    record.add_argument(ap)
    args = ap.parse_args()
    rec = record.Run("diskpolicy", args.results)
    with tempfile.TemporaryDirectory() as tmp:
        mnt = Path(tmp) / "disk"
        mnt.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512m", "tmpfs", str(mnt)], check=True)
        try:
            result = run(mnt, args.passes, args.cameras, args.segments)
        finally:
            subprocess.run(["umount", "-l", str(mnt)], check=False)
    text = json.dumps(result, indent=2)
    print(text)
    rec.write(result)


if __name__ == "__main__":
    main()
