"""What the real agent seals and signs (spliced batches, status, will) verifies with pycose,
an implementation that is not ours, in its own venv (`make interop-venv`)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import cbor2
import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.peers.agent import Branch, sale
from tests.peers.net import wait_for

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
INTEROP_PY = ROOT / ".venv-interop" / "bin" / "python"
SCRIPT = ROOT / "tests" / "receiver" / "interop_verify.py"


def test_agent_batches_and_status_verify_with_pycose(branch: Branch) -> None:
    if not INTEROP_PY.exists():
        pytest.skip(f"{INTEROP_PY} missing: run `make interop-venv`")
    statuses: list[bytes] = []
    sub = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    sub.on_message = lambda c, u, m: statuses.append(bytes(m.payload))
    sub.connect("127.0.0.1", branch.broker.port)
    sub.subscribe(f"coop/v1/{branch.device}/status", qos=1)
    sub.loop_start()
    try:
        branch.start_receiver()
        agent = branch.start_agent()
        ids = branch.post([sale(i) for i in range(700)]).json()["ids"]
        wait_for(lambda: agent.store.backlog()["records"] == 0, timeout=30, what="acked")
        wait_for(lambda: statuses, timeout=10, what="a retained status")
    finally:
        sub.loop_stop()
        sub.disconnect()
    batches = [c for _, c in agent.store.batches_from(1, 1000)]
    assert len(batches) >= 2  # 700 records: at least one full 500-record batch, spliced
    pub = branch.device_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    items = [{"cose": c.hex(), "key": pub} for c in batches + statuses]
    out = subprocess.run([str(INTEROP_PY), str(SCRIPT)], input=json.dumps(items), capture_output=True,
                         text=True, check=True, timeout=60)
    results = json.loads(out.stdout)
    assert all(r["ok"] and r["alg"] == "EDDSA" and r["uhdr"] == 0 for r in results), results
    payloads = [cbor2.loads(bytes.fromhex(r["payload"])) for r in results]
    seen = {rec["id"] for p in payloads[: len(batches)] for rec in p["records"]}
    assert set(ids) <= seen
    assert payloads[-1]["state"] == "online" and payloads[-1]["dev"] == branch.device
