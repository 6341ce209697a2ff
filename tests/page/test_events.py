"""The page's server-sent events: a broker outage reaches an open stream at once, and through
an API worker process (which collects an answer whole) the stream ends after its events and
resumes from Last-Event-ID, so nothing is lost."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from tests.peers.agent import Branch
from tests.peers.net import wait_for


def events(lines: list[str]) -> list[tuple[int, dict[str, Any]]]:
    out: list[tuple[int, dict[str, Any]]] = []
    seq = 0
    for line in lines:
        if line.startswith("id: "):
            seq = int(line[4:])
        elif line.startswith("data: "):
            out.append((seq, json.loads(line[6:])))
    return out


def test_a_broker_outage_reaches_an_open_stream(branch: Branch) -> None:
    agent = branch.start_agent()
    auth = {"Authorization": f"Bearer {branch.token}"}
    with httpx.Client(base_url=f"http://127.0.0.1:{branch.api_port}", headers=auth, timeout=10) as c, \
            c.stream("GET", "/page/events") as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = r.iter_lines()
        wait_for(lambda: agent.uplink.connected, what="the uplink connected")  # the stream starts at "now"
        branch.broker.stop()
        t0 = time.monotonic()
        seen: list[str] = []
        for line in lines:
            seen.append(line)
            got = [e for _, e in events(seen) if e["event"] == "link"]
            if got and got[-1]["data"]["connected"] is False:
                break
            assert time.monotonic() - t0 < 10, seen
        assert time.monotonic() - t0 < 5


def test_through_a_worker_process_the_stream_resumes(branch: Branch) -> None:
    branch.start_agent(api={"workers": 1})
    auth = {"Authorization": f"Bearer {branch.token}"}
    with httpx.Client(base_url=f"http://127.0.0.1:{branch.api_port}", headers=auth, timeout=30) as c:
        first = c.get("/page/events", headers={"Last-Event-ID": "0"})  # ends: the worker collects it whole
        assert first.status_code == 200 and "retry: 300" in first.text
        got = events(first.text.splitlines())
        assert got and got[0][0] == 1 and {e["event"] for _, e in got} >= {"link"}
        last = got[-1][0]
        branch.broker.stop()
        deadline = time.monotonic() + 15
        while True:  # each answer ends after its events; the next asks from the last id
            more = events(c.get("/page/events", headers={"Last-Event-ID": str(last)}).text.splitlines())
            assert more and more[0][0] == last + 1  # nothing skipped
            last = more[-1][0]
            if any(e["event"] == "link" and e["data"]["connected"] is False for _, e in more):
                break
            assert time.monotonic() < deadline, "no link event through the worker"
