"""The receiver's Prometheus endpoint against a real receiver and broker, and the alert rules under promtool."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from receiver.config import load_receiver_config
from receiver.metrics import BranchRow, render_branches
from receiver.server import Receiver
from tests.peers.net import free_port, wait_for
from tests.receiver.helpers import AgentSide, DeviceSim

STORES = ("sqlite", "postgresql")
ROOT = Path(__file__).resolve().parents[2]


def samples(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def value(port: int, name: str, **labels: str) -> float | None:
    return samples(port).get((name, tuple(sorted(labels.items()))))


def test_metrics_count_what_happened_and_show_each_branch(
    rx_config: Path, agent: AgentSide, devices: list[DeviceSim]
) -> None:
    port = free_port()
    rx_config.write_text(
        rx_config.read_text().replace("[receiver]\n", f"[receiver]\nmetrics_port = {port}\nmetrics_refresh_s = 1\n", 1)
    )
    dev = devices[0]
    labels = dict(zip(("society", "branch", "device"), dev.dev.split("/"), strict=True))
    with Receiver(load_receiver_config(rx_config)) as rx:
        central = rx.signer.key.public_key()
        for _ in range(3):
            agent.publish("batch", dev.dev, dev.next_batch(4))
        agent.wait_ack(central, dev.dev, 3)
        bad = bytearray(dev.next_batch(1))
        bad[-1] ^= 1  # a flipped signature bit
        agent.publish("batch", dev.dev, bytes(bad))
        # The branch's clock is 300 s ahead of ours, and it reports a backlog.
        ahead = int(time.time() * 1000) + 300_000
        agent.publish("status", dev.dev, dev.status(at=ahead, backlog={"records": 42, "batches": 2, "media_bytes": 0}))
        wait_for(lambda: value(port, "coop_receiver_rejections_total", code="bad_signature") == 1.0,
                 what="the rejection counted")
        wait_for(lambda: value(port, "coop_receiver_branch_backlog_records", **labels) == 42.0, timeout=15,
                 what="the branch's reported backlog")
        s = samples(port)
        assert s[("coop_receiver_batches_total", (("outcome", "stored"),))] == 3.0
        assert s[("coop_receiver_records_stored_total", ())] == 12.0
        assert s[("coop_receiver_branch_acked_seq", tuple(sorted(labels.items())))] == 3.0
        drift = s[("coop_receiver_branch_clock_drift_seconds", tuple(sorted(labels.items())))]
        assert 290 < drift <= 300
        assert s[("coop_receiver_commit_seconds_count", ())] >= 1
        assert s[("coop_receiver_broker_connected", ())] == 1.0
        last_seen = s[("coop_receiver_branch_last_seen_timestamp_seconds", tuple(sorted(labels.items())))]
        assert abs(last_seen - time.time()) < 60
        # Loopback only: the endpoint is not on the machine's other addresses.
        assert rx.metrics._server.server_address[0] == "127.0.0.1"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)  # stopped with the receiver


def test_per_branch_series_are_bounded_and_the_rest_counted_per_society() -> None:
    def row(dev: str, seen: int, breaks: int = 0) -> BranchRow:
        return BranchRow(dev, 1, 1, 0, breaks, seen, None, None, None, True)

    rows = [row("s1/b1/a", 300), row("s1/b2/a", 100, breaks=1), row("s2/b1/a", 200), row("s1/b3/a", 50, 2)]
    fams = {f.name: f for f in text_string_to_metric_families(render_branches(rows, 2).decode())}
    devices = {s.labels["branch"] + "@" + s.labels["society"] for s in fams["coop_receiver_branch_acked_seq"].samples}
    assert devices == {"b1@s1", "b1@s2"}  # the two seen most recently
    unlisted = {s.labels["society"]: s.value for s in fams["coop_receiver_society_unlisted_branches"].samples}
    assert unlisted == {"s1": 2}
    assert [s.value for s in fams["coop_receiver_society_unlisted_chain_breaks"].samples] == [3]
    # Unknown values (no status yet: no backlog, no drift) are left out, not exported as 0.
    assert fams["coop_receiver_branch_backlog_records"].samples == []


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
def test_alert_rules_pass_promtool_check_and_their_unit_tests(store_kind: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: Debian package prometheus (scripts/install-system-deps.sh)")
    check = subprocess.run([promtool, "check", "rules", str(ROOT / "receiver/alerts.rules.yml")],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 7 rules found" in check.stdout
    test = subprocess.run([promtool, "test", "rules", "alerts_test.yml"], cwd=ROOT / "tests/receiver/promtool",
                          capture_output=True, text=True, timeout=60)
    assert test.returncode == 0, test.stdout + test.stderr
