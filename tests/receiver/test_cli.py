"""`coop-receiver`: keys, config errors, status while running, commands through a real broker."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from receiver.cli import cli, parse_time
from receiver.config import load_receiver_config
from receiver.keys import load_central_key
from receiver.server import Receiver
from tests.peers.mosquitto import Mosquitto
from tests.peers.net import wait_for
from tests.receiver.helpers import AgentSide, DeviceSim
from wire.cose import kid_for

EXE = [sys.executable, "-c", "from receiver.cli import main; main()"]


def invoke(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(cli, list(args))
    return r.exit_code, r.stdout, r.stderr


def test_keys_init_show_and_refuse_overwrite(tmp_path: Path) -> None:
    cfg = tmp_path / "rx.toml"
    cfg.write_text('[receiver]\nkey_file = "keys/central.pem"\n')
    code, out, _ = invoke("keys", "init", "--config", str(cfg))
    key = tmp_path / "keys" / "central.pem"  # relative to the config's folder
    assert code == 0 and str(key) in out
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    before = key.read_bytes()
    code, _, err = invoke("keys", "init", "--config", str(cfg))
    assert code == 2 and "refusing to overwrite" in err and key.read_bytes() == before
    code, out, _ = invoke("keys", "show", "--config", str(cfg))
    from wire.keys import load_private_key

    kid = kid_for(load_private_key(key).public_key()).hex()
    assert code == 0 and f"kid     {kid}" in out and "PRIVATE" not in out
    code, out, _ = invoke("keys", "show", "--pem", "--config", str(cfg))
    assert out.startswith("-----BEGIN PUBLIC KEY-----") and "PRIVATE" not in out
    assert invoke("keys", "init", "--force", "--config", str(cfg))[0] == 0 and key.read_bytes() != before
    key.chmod(0o644)
    code, _, err = invoke("keys", "show", "--config", str(cfg))
    assert code == 2 and "0644" in err


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        (
            '[receiver]\nbrokr = "mqtt://x"\n',
            "receiver.brokr: unknown key; allowed keys here: broker, ca_file",
        ),
        (
            '[receiver]\nbroker = "http://x:1883"\n',
            "receiver.broker = 'http://x:1883': must be mqtt://HOST[:PORT]",
        ),
        ("[receiver]\nmedia_idle_s = -1\n", "receiver.media_idle_s = -1: Input should be greater than 0"),
        (
            '[[devices]]\nid = "Soc/b/d"\npublic_key = "k.pem"\n',
            "devices[0].id = 'Soc/b/d': must be SOCIETY/BRANCH/DEVICE",
        ),
        ('[[devices]]\nid = "s/b/d"\n', "devices[0].public_key: Field required"),
        (
            '[receiver]\ncert_file = "c.pem"\nbroker = "mqtts://h"\n',
            "cert_file and client_key_file go together",
        ),
        ("[receiver\n", "not valid TOML"),
    ],
)
def test_bad_config_names_key_value_and_what_is_allowed(tmp_path: Path, toml: str, expected: str) -> None:
    cfg = tmp_path / "rx.toml"
    cfg.write_text(toml)
    code, out, err = invoke("config", "check", "--config", str(cfg))
    assert code == 2 and out == ""
    assert expected in err and str(cfg) in err


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    code, _, err = invoke("status", "--config", str(tmp_path / "nope.toml"))
    assert code == 2 and "file not found" in err


@pytest.mark.parametrize("store_kind", ["sqlite", "postgresql"], indirect=True)
def test_status_reads_the_database_while_run_runs(
    rx_config: Path, mosquitto: Mosquitto, agent: AgentSide, devices: list[DeviceSim]
) -> None:
    dev, quiet = devices
    proc = subprocess.Popen([*EXE, "run", "--config", str(rx_config)], stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)  # type: ignore[arg-type]
    reader.start()
    try:
        cfg = load_receiver_config(rx_config)
        wait_for(
            lambda: any("coop-receiver running" in ln for ln in lines),
            timeout=20,
            what="the receiver to be subscribed",
        )
        central = load_central_key(cfg.receiver.key_file).public_key()
        b = [dev.next_batch(2) for _ in range(3)]
        agent.publish("batch", dev.dev, b[0])
        agent.wait_ack(central, dev.dev, 1, timeout=20)
        agent.publish("batch", dev.dev, b[2])  # seq 2 is missing: a gap
        agent.publish("status", dev.dev, dev.status("online", acked_seq=1), retain=True)
        agent.publish("batch", quiet.dev, b"junk")

        def status_json() -> dict[str, object]:
            out = subprocess.run(
                [*EXE, "status", "--json", "--config", str(rx_config)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            return json.loads(out)  # type: ignore[no-any-return]

        def ready() -> dict[str, object] | None:
            d = status_json()
            ok = any(s["dev"] == dev.dev and s["last_status"] and s["held_batches"] == 1 for s in d["devices"])
            junk = any(s["dev"] == quiet.dev and s["rejections"] == 1 for s in d["devices"])
            return d if ok and junk else None

        doc = wait_for(ready, what="status with the gap and the agent's status")
        (rx,) = doc["receivers"].values()  # by client id: receivers sharing a database keep a row each
        assert rx["broker"]["value"] == "connected"
        st = next(s for s in doc["devices"] if s["dev"] == dev.dev)
        assert st["acked_seq"] == 1 and st["highest_seq_seen"] == 3 and st["gaps"] == [[2, 2]]
        assert st["records"] == 2 and st["last_status"]["state"] == "online"
        text = subprocess.run(
            [*EXE, "status", "--config", str(rx_config)], capture_output=True, text=True, check=True
        ).stdout
        assert text.startswith("receiver ") and ": broker connected (since " in text.splitlines()[0]
        assert dev.dev in text and "acked seq        1 (highest seen 3, held 1)" in text
        assert "gaps             2" in text and "status           online" in text
        q = next(s for s in doc["devices"] if s["dev"] == quiet.dev)
        assert q["rejections"] == 1 and q["known"] is False and q["registered"] is True
        assert f"{quiet.dev}\n  nothing accepted yet; 1 rejections" in text
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
        reader.join(timeout=10)
        assert proc.stderr is not None
        proc.stderr.close()
        assert rc == 0


def test_send_command_and_request_clip_are_signed_for_the_device(
    receiver: Receiver, rx_config: Path, agent: AgentSide, devices: list[DeviceSim]
) -> None:
    dev = devices[0]
    central = receiver.signer.key.public_key()
    code, out, err = invoke("send-command", dev.dev, "ping", "--config", str(rx_config))
    assert code == 0, err
    cid = out.strip()
    cmd = wait_for(lambda: next((c for c in agent.decoded(central, "cmd") if c["id"] == cid), None), what="ping")
    assert cmd == {"v": 1, "dev": dev.dev, "id": cid, "cmd": "ping", "args": {}, "at": cmd["at"]}
    code, out, err = invoke(
        "request-clip",
        dev.dev,
        "dock-1",
        "--start",
        "2026-11-29T14:00:00Z",
        "--end",
        "1795961100000",
        "--config",
        str(rx_config),
    )
    assert code == 0, err
    cid = out.strip()
    clip = wait_for(lambda: next((c for c in agent.decoded(central, "cmd") if c["id"] == cid), None), what="clip")
    assert clip["cmd"] == "clip" and clip["args"] == {
        "camera": "dock-1",
        "start": 1795960800000,
        "end": 1795961100000,
    }
    code, _, err = invoke("send-command", dev.dev, "resend", "--args", '{"from_seq": 0}', "--config", str(rx_config))
    assert code == 2 and "from_seq" in err
    code, _, err = invoke("send-command", "Not/A/Device", "ping", "--config", str(rx_config))
    assert code == 2 and "DEVICE = 'Not/A/Device'" in err


def test_send_command_reports_an_unreachable_broker(tmp_path: Path) -> None:
    from tests.peers.net import free_port
    from tests.receiver.helpers import write_config

    cfg = write_config(tmp_path, f"mqtt://127.0.0.1:{free_port()}", [])
    code, _, err = invoke("send-command", "a/b/c", "ping", "--config", str(cfg))
    assert code == 2 and "cannot connect to the broker" in err


def test_parse_time() -> None:
    assert parse_time("1795960800000", "start") == 1795960800000
    assert parse_time("2026-11-29T14:00:00+00:00", "start") == 1795960800000
    assert parse_time("2026-11-29T17:00:00+03:00", "start") == 1795960800000
    with pytest.raises(ValueError, match="--end = 'noon'"):
        parse_time("noon", "end")


def test_in_process_api_for_the_end_to_end_tests(rx_config: Path) -> None:
    cfg = load_receiver_config(rx_config)
    assert cfg.receiver.db == rx_config.parent / "rx" / "receiver.sqlite3"
    assert os.path.isabs(cfg.devices[0].public_key[0])
