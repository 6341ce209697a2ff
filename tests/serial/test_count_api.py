"""The /v1/count routes mounted in the agent's real ApiComponent (uvicorn on a loopback port), with
the engine built by build_components as in the agent; requests over real HTTP with httpx."""

from __future__ import annotations

from tests.serial.conftest import CountApi


def test_open_status_close(count_api: CountApi) -> None:
    client, sink = count_api.client, count_api.sink
    r = client.post("/v1/count/open", json={"location": "A-12"})
    assert r.status_code == 201, r.text
    sid = r.json()["session"]
    assert r.json()["device"] == "room" and r.json()["blind"] is True
    st = client.get("/v1/count/status").json()
    assert st["sessions"][0]["session"] == sid and "totals" not in st["sessions"][0]
    again = client.post("/v1/count/open", json={"location": "A-12"})
    assert again.status_code == 409 and "already has session" in again.json()["error"]
    r = client.post("/v1/count/close", json={"session": sid})
    assert r.status_code == 200 and r.json()["state"] == "closed" and r.json()["lines"] == 0
    assert [s["data"]["state"] for s in sink.of("count_session")] == ["open", "closed"]
    assert all(s["src"] == "api:local" for s in sink.of("count_session"))


def test_errors(count_api: CountApi) -> None:
    client = count_api.client
    assert client.post("/v1/count/open", json={"location": "bad location!"}).status_code == 422
    assert client.post("/v1/count/open", json={"location": "A-1", "device": "nope"}).status_code == 404
    assert client.post("/v1/count/close", json={"device": "room"}).status_code == 404
    assert client.post("/v1/count/open", json={"location": "A-1", "recount": True}).status_code == 404
    r = client.get("/v1/count/status", headers={"Authorization": "Bearer wrong-token-wrong-token"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert client.get("/v1/count/status", headers={"Authorization": ""}).status_code == 401
