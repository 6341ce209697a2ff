"""bench_ingest counts 2xx answers only, and voids a run with any other answer (issue 13).

Before, wrk's Requests/sec (every answer, refusals included) was the throughput figure and
a run full of fast 401s or 503s printed a fine-looking rate. Real wrk against the real API.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import bench_ingest
from tests.api.conftest import TOKEN
from tests.api.test_ingest import rec
from tests.api.test_server import Serve

BODY = json.dumps({"records": [rec()]}).encode()


def test_a_run_with_refusals_is_void(serve: Serve, tmp_path: Path) -> None:
    api = serve()
    url = f"{api.url}/v1/records"
    assert bench_ingest.TOKEN != TOKEN  # every request is a 401
    with pytest.raises(bench_ingest.FailedAnswers, match=r"answers were not 2xx .* the run is void"):
        bench_ingest.wrk(url, BODY, tmp_path, 2, 1, 1)


def test_a_clean_run_counts_its_2xx_answers(serve: Serve, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    api = serve()
    monkeypatch.setattr(bench_ingest, "TOKEN", TOKEN)
    before = bench_ingest.ingest_answers()
    result = bench_ingest.wrk(f"{api.url}/v1/records", BODY, tmp_path, 2, 1, 1)
    assert result["ok"] == result["requests"] > 0 and result["non2xx"] == 0
    assert result["rps"] == pytest.approx(result["ok"] / result["seconds"], rel=0.01)
    bench_ingest.server_saw_only_201(before, result["ok"], api.url)
    assert api.count() >= result["ok"]


def test_parse_takes_refusals_out_of_the_rate() -> None:
    out = """Running 2s test @ http://127.0.0.1:1/v1/records
  1 threads and 8 connections
  Latency Distribution
     50%    2.61ms
     99%    8.79ms
  5000 requests in 2.00s, 1.2MB read
  Socket errors: connect 0, read 3, write 0, timeout 1
  Non-2xx or 3xx responses: 1000
Requests/sec:   2500.00
"""
    r = bench_ingest.parse_wrk(out)
    assert (r["requests"], r["ok"], r["non2xx"], r["socket_errors"], r["rps"]) == (5000, 4000, 1000, 4, 2000.0)
    with pytest.raises(bench_ingest.FailedAnswers, match="1000 of 5000 answers were not 2xx and 4 requests failed"):
        bench_ingest.check_answers(r, "u")
