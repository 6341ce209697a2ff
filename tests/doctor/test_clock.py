"""clock.centre: this PC's clock against the centre's, from the `at` of signed central commands.

uplink-v1 acks carry no time; commands do. The centre's clock "off by minutes" is made real by
signing a ping whose `at` is two minutes old (as the centre's clock would stamp it if this PC
ran two minutes ahead): it is within the agent's command skew limit, so it is carried out and
becomes a sample. Real: Mosquitto, the reference receiver's key and link, the in-process agent
with its API, the doctor reading the agent's status.
"""

from __future__ import annotations

import json
import time
from typing import Any

from click.testing import CliRunner

from agent.cli.main import cli
from tests.peers.agent import Branch
from tests.peers.net import wait_for
from wire.messages import command
from wire.topics import device_topic


def doctor_clock(branch: Branch) -> dict[str, Any]:
    r = CliRunner().invoke(cli, ["doctor", "--json", "--config", str(branch.write_agent_config())],
                           catch_exceptions=False)
    return {c["id"]: c for c in json.loads(r.output)["checks"]}["clock.centre"]


def ping(branch: Branch, at_ms: int) -> str:
    rx = branch.receiver
    cid, cose = command(rx.signer, branch.device, "ping", {}, at_ms=at_ms)
    rx.link.publish(device_topic(rx.prefix, branch.device, "cmd"), cose)
    return cid


def test_a_centre_two_minutes_behind_is_an_error_and_a_fresh_command_clears_it(branch: Branch) -> None:
    branch.start_receiver()
    agent = branch.start_agent()
    wait_for(lambda: agent.uplink.subscribed, what="uplink subscribed")
    assert doctor_clock(branch)["result"] == "skipped", "no command yet: nothing is known"

    ping(branch, int(time.time() * 1000) - 120_000)
    wait_for(lambda: agent.centre_clock.as_dict()["centre_samples"] == 1, timeout=20, what="the first sample")
    check = doctor_clock(branch)
    assert check["result"] == "error", check
    seconds = float(check["message"].split("clock is ")[1].split(" s")[0])
    assert 119.5 <= seconds <= 125, check["message"]
    assert "timedatectl" in check["fix"]

    # A command sent now has the shorter transit: the minimum filter takes it.
    ping(branch, int(time.time() * 1000))
    wait_for(lambda: agent.centre_clock.as_dict()["centre_samples"] == 2, timeout=20, what="the second sample")
    check = doctor_clock(branch)
    assert check["result"] == "ok", check
    assert abs(float(check["message"].split(" s from")[0])) < 5


def test_samples_age_out_and_the_smallest_recent_one_is_the_estimate() -> None:
    from agent.clock import CentreClock

    wall, mono = [1_000.0], [0.0]
    c = CentreClock(keep=4, max_age_s=60, wall=lambda: wall[0], mono=lambda: mono[0])
    assert c.as_dict() == {"centre_offset_ms": None, "centre_samples": 0}
    c.note(1_000_000 - 30_000)  # queued 30 s in the broker while the agent was offline
    c.note(1_000_000 - 40)      # a fresh one: transit 40 ms
    assert c.as_dict() == {"centre_offset_ms": 40, "centre_samples": 2}
    mono[0] = 61.0              # both older than max_age_s
    assert c.as_dict() == {"centre_offset_ms": None, "centre_samples": 0}
