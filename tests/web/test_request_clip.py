"""An operator asks a branch for a clip from a record's page and watches it arrive, end to end.

Real peers all the way: Mosquitto, the receiver (`Receiver`, the code `coop-receiver run`
runs) storing into the same store the web application reads, and on the branch's side a
real MQTT client that receives the signed command, checks it with the central public key,
and answers as the agent does: a batch with the `device_event` naming the command id and
the `media` record whose reason names it, then the clip's chunks. The page, which polls
its requests, reloads by itself and plays the new clip.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
from selenium.webdriver.common.by import By

from receiver.keys import load_central_key
from receiver.server import Receiver
from tests.peers.mosquitto import Mosquitto
from tests.peers.net import wait_for
from tests.receiver.helpers import AgentSide
from tests.web.conftest import Browser, Centre, Web, make_mp4

pytestmark = pytest.mark.slow
DEV = "soc-a/branch-1/agent-1"


@pytest.fixture
def live(centre: Centre, mosquitto: Mosquitto) -> Iterator[Receiver]:
    centre.config.receiver.broker = mosquitto.url
    rx = Receiver(centre.config).start()
    try:
        yield rx
    finally:
        rx.stop()


@pytest.fixture
def branch(mosquitto: Mosquitto) -> Iterator[AgentSide]:
    a = AgentSide(mosquitto.port)
    try:
        yield a
    finally:
        a.close()


def answer(centre: Centre, branch: AgentSide, cmd: dict[str, Any]) -> None:
    """What the agent does for a clip command: answer it, announce the clip in a batch, send its chunks."""
    blob = make_mp4(centre.tmp / "asked.mp4", seconds=3).read_bytes()
    args, media_id, size = cmd["args"], "asked-1", 64 * 1024
    sim = centre.devices[DEV]
    records = [
        {"id": "0190a000-0000-7000-c000-000000000001", "kind": "device_event", "at": args["end"] + 1000,
         "src": "agent", "data": {"device": "agent", "event": "command",
                                  "detail": {"command": cmd["id"], "cmd": "clip", "result": "ok",
                                             "media": media_id, "camera": args["camera"]}}},
        {"id": "0190a000-0000-7000-c000-000000000002", "kind": "media", "at": args["end"] + 1000,
         "src": "camera:" + args["camera"],
         "data": {"media": media_id, "camera": args["camera"], "type": "video/mp4", "start": args["start"],
                  "end": args["end"], "size": len(blob), "sha256": hashlib.sha256(blob).digest(), "chunk": size,
                  "chunks": -(-len(blob) // size), "reason": {"command": cmd["id"]}}},
    ]
    branch.publish("batch", DEV, sim.next_batch(records=records))
    for i in range(-(-len(blob) // size)):
        branch.publish(f"media/{media_id}/{i}", DEV, blob[i * size:(i + 1) * size])


def test_operator_asks_for_a_clip_and_sees_it_arrive(live: Receiver, branch: AgentSide, browser: Browser,
                                                     web: Web) -> None:
    b, c = browser, web.centre
    b.login("olga")
    b.get("/record/" + c.ids["void"].replace(":", "/"))
    assert len(b.d.find_elements(By.CSS_SELECTOR, "video.player")) == 1
    camera = b.d.find_element(By.NAME, "camera")
    camera.clear()
    camera.send_keys("till-3")
    b.d.find_element(By.ID, "ask").click()
    b.wait(lambda d: d.find_elements(By.CSS_SELECTOR, "tr.request"))
    assert b.d.find_element(By.CSS_SELECTOR, "tr.request td.state").text == "sent, waiting for the branch"
    b.shot("requested")

    central = load_central_key(c.config.receiver.key_file).public_key()
    cmds = wait_for(lambda: [m for m in branch.decoded(central, "cmd") if m["cmd"] == "clip"], timeout=15,
                    what="the signed clip command at the branch")
    cmd = cmds[0]
    # The form's default span: 30 s either side of the void (16:01:00 UTC).
    assert cmd["dev"] == DEV and cmd["args"] == {"camera": "till-3", "start": 1_764_000_030_000,
                                                 "end": 1_764_000_090_000}
    answer(c, branch, cmd)

    # The page polls its requests and reloads itself when the clip is complete.
    b.wait(lambda d: d.find_elements(By.CSS_SELECTOR, "tr.request[data-state=arrived]"), timeout=30)
    players = b.d.find_elements(By.CSS_SELECTOR, "video.player")
    assert len(players) == 2
    asked = next(v for v in players if "asked-1" in (v.get_attribute("src") or ""))
    caption = asked.find_element(By.XPATH, "..").text
    assert f"asked for by the centre (command {cmd['id']})" in caption
    b.d.execute_script("arguments[0].play()", asked)
    b.wait(lambda d: d.execute_script("return arguments[0].currentTime", asked) > 0.5, timeout=20)
    b.shot("arrived-playing")

    db = c.web_db()
    try:
        logged = [tuple(r) for r in db.execute("SELECT account, action FROM access_log WHERE action LIKE 'request_%'")]
    finally:
        db.close()
    assert logged == [("olga", "request_clip")]
