"""`coop-receiver status`: per branch last seen, chain state, gaps, clock drift, reported backlog, last error."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from receiver.cli import cli
from receiver.server import Receiver
from tests.peers.net import wait_for
from tests.receiver.helpers import AgentSide, DeviceSim

STORES = ("sqlite", "postgresql")


def status(rx_config: Path, dev: str, human: bool = False) -> Any:
    r = CliRunner().invoke(cli, ["status", "--config", str(rx_config), *([] if human else ["--json"]), dev])
    assert r.exit_code == 0, r.output
    return r.output if human else json.loads(r.output)["devices"][0]


def test_status_shows_what_an_operator_asks_first(
    receiver: Receiver, agent: AgentSide, devices: list[DeviceSim], rx_config: Path
) -> None:
    dev = devices[0]
    central = receiver.signer.key.public_key()
    first = dev.next_batch(1)
    agent.publish("batch", dev.dev, first)
    agent.wait_ack(central, dev.dev, 1)
    s = status(rx_config, dev.dev)
    assert (s["chain"], s["gaps"], s["last_error"], s["clock_drift_ms"]) == ("ok", [], None, None)
    assert abs(s["last_seen"] / 1000 - time.time()) < 60

    dev.next_batch(1)  # seq 2 never reaches the centre
    agent.publish("batch", dev.dev, dev.next_batch(1))
    wait_for(lambda: status(rx_config, dev.dev)["chain"] == "gaps", what="the gap")
    assert status(rx_config, dev.dev)["gaps"] == [[2, 2]]

    # The branch's clock runs 2 minutes behind, and it reports its backlog.
    behind = int(time.time() * 1000) - 120_000
    agent.publish("status", dev.dev, dev.status(at=behind, acked_seq=1,
                                                backlog={"records": 7, "batches": 2, "media_bytes": 0}))
    wait_for(lambda: status(rx_config, dev.dev)["backlog"] is not None, what="the status")
    s = status(rx_config, dev.dev)
    assert -125_000 < s["clock_drift_ms"] <= -120_000
    assert s["backlog"] == {"records": 7, "batches": 2, "media_bytes": 0} and s["reported_acked_seq"] == 1

    # Another batch signed for seq 1: a fork, kept as evidence; the chain is broken and that is the last error.
    forged = DeviceSim(dev.dev, key=dev.key)
    agent.publish("batch", dev.dev, forged.next_batch(2))
    wait_for(lambda: status(rx_config, dev.dev)["chain"] == "broken", what="the chain break")
    s = status(rx_config, dev.dev)
    assert s["last_error"]["code"] == "chain_break" and s["last_error"]["seq"] == 1
    text = status(rx_config, dev.dev, human=True)
    assert "chain            broken" in text and "clock drift      -12" in text
    assert "last error       chain_break" in text
