"""Evidence export: time export_bundle for a 10-clip bundle (issue 11: <= 5 s), and coop-verify on it.

The store is filled through the real path first (tests/receiver/evidence/site.py): a void
sale, the clip a rule made for it and 9 more clips asked for by commands, every one a real
H.264 MP4 (ffmpeg, 1280x720, --clip-seconds at --bitrate: ~7.5 MB for 30 s at 2 Mbit/s),
sealed and signed with the wire package, sent through a real Mosquitto in 64 KiB chunks and
accepted by a running Receiver. Then, with the receiver stopped, the export of the void plus
the 9 command clips' records (10 clips) is timed --runs times, each into a new file and
fsynced, and the bundle verified once by coop-verify's code.

  .venv/bin/python -m bench.bench_export
  .venv/bin/python -m bench.bench_export --postgres   # the PostgreSQL store (tests/peers/postgres.py)
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from coopverify.verify import verify_bundle
from receiver.config import load_receiver_config
from receiver.evidence.export import export_bundle
from receiver.evidence.keys import lookup_for
from receiver.keys import load_central_key
from receiver.server import Receiver
from receiver.store import ReceiverStore
from tests.peers.mosquitto import Mosquitto
from tests.receiver.evidence.site import make_clip, populate, variant
from tests.receiver.helpers import AgentSide, DeviceSim, write_config
from wire.cose import Signer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clip-seconds", type=float, default=30)
    ap.add_argument("--bitrate", default="2M")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--postgres", action="store_true", help="store in a throwaway PostgreSQL 15, not SQLite")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmpdir:
        tmp = Path(tmpdir)
        t = time.monotonic()
        base = make_clip(tmp / "base.mp4", seconds=args.clip_seconds, size="1280x720", pattern="testsrc2",
                         bitrate=args.bitrate)
        clips = [variant(base, tmp / f"clip-{i}.mp4", i) for i in range(10)]
        print(f"clips: 10 x {base.stat().st_size / 1e6:.1f} MB made in {time.monotonic() - t:.1f} s")
        pg = None
        extra = ""
        if args.postgres:
            from tests.peers.postgres import Postgres

            pg = Postgres().start()
            (tmp / "pg.password").write_text(pg.password + "\n")
            extra = f'database_url = "{pg.url(pg.new_database(), with_password=False)}"\n' \
                    'database_password_file = "pg.password"'
        broker = Mosquitto(tmp / "mosquitto").start()
        try:
            dev = DeviceSim("bench-soc/branch-1/till-3")
            cfg = load_receiver_config(write_config(tmp, broker.url, [dev], extra=f"media_idle_s = 0.5\n{extra}"))
            rx = Receiver(cfg).start()
            agent = AgentSide(broker.port)
            t = time.monotonic()
            try:
                site = populate(rx, agent, dev, clips[0], clips[1:], timeout=600)
            finally:
                agent.close()
                rx.stop()
            print(f"ingest: 6 batches and 10 clips through Mosquitto in {time.monotonic() - t:.1f} s")
            signer = Signer(load_central_key(cfg.receiver.key_file))
            selection = [(dev.dev, site.void_id)] + [(dev.dev, site.media[f"cmd-{i}"]) for i in range(9)]
            times = []
            for run in range(args.runs):
                out = tmp / f"bundle-{run}.zip"
                t = time.perf_counter()
                with ReceiverStore(cfg.receiver) as store, out.open("wb") as f:
                    s = export_bundle(store.conn, cfg.receiver.media_dir, selection, signer, f,
                                      exporter_name="bench", keys=lookup_for(cfg))
                    f.flush()
                    os.fsync(f.fileno())
                times.append(time.perf_counter() - t)
                assert s.clips == 10, s
            size = out.stat().st_size
            t = time.perf_counter()
            report = verify_bundle(out, signer.key.public_key())
            verify_s = time.perf_counter() - t
            assert report.ok, report.failures
            store_kind = "postgresql" if args.postgres else "sqlite"
            print(f"export ({store_kind}): 10 clips, {s.records} records, bundle {size / 1e6:.1f} MB: "
                  f"median {statistics.median(times):.2f} s, max {max(times):.2f} s over {args.runs} runs")
            print(f"coop-verify: {verify_s:.2f} s")
            print(f"load average: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
        finally:
            broker.stop()
            if pg is not None:
                pg.destroy()


if __name__ == "__main__":
    main()
