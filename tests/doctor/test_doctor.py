"""`coopagent doctor`: the output, the exit codes, and the core's checks against real failures."""

from __future__ import annotations

import json
import re

from click.testing import CliRunner

from agent.cli.main import cli
from agent.subsystems import FAMILIES, doctor_checks
from tests.doctor.conftest import Pc


def test_human_output_one_line_per_check_with_fixes_and_exit_by_worst(pc: Pc) -> None:
    """Nothing listens on the broker port: broker.reachable fails with a fix, and the exit is 2."""
    r = CliRunner().invoke(cli, ["doctor", "--config", str(pc.config())], catch_exceptions=False)
    assert r.exit_code == 2
    lines = r.output.splitlines()
    assert re.match(r"^\[ OK \] config\.valid\s+the config is valid$", lines[0])
    fail = next(i for i, line in enumerate(lines) if line.startswith("[FAIL] broker.reachable"))
    assert "fix: check the network and firewall" in lines[fail + 1]
    assert re.search(r"\d+ ok, \d+ warnings, 1 failures, \d+ skipped$", lines[-1])
    assert all(re.match(r"^\[( OK |WARN|FAIL|SKIP)\] [a-z0-9.-]+ ", ln) for ln in lines[:-1] if not ln.startswith(" "))


def test_json_document_and_stable_ids(pc: Pc) -> None:
    code, checks = pc.doctor()
    assert code == 2
    for fid in ("config.valid", "config.central-key", "config.api-token", "key.present", "key.mode",
                "key.registered", "clock.sync", "clock.centre", "tls.ca", "tls.client-cert", "broker.reachable",
                "broker.tls", "broker.auth", "broker.publish", "disk.free", "disk.outage-days",
                "buffer.integrity", "service.state", "service.watchdog", "agent.components"):
        assert fid in checks, fid
    assert checks["broker.reachable"]["result"] == "error" and checks["broker.reachable"]["fix"]
    assert checks["broker.auth"]["result"] == "skipped"
    assert checks["agent.components"]["result"] == "skipped"
    assert "not running" in checks["agent.components"]["message"]
    assert all(c["fix"] for c in checks.values() if c["result"] in ("warning", "error"))


def test_invalid_config_is_one_failure_naming_the_key(pc: Pc) -> None:
    path = pc.config()
    path.write_text(path.read_text() + "\n[buffer]\nbatch_max_records = 0\n")
    r = CliRunner().invoke(cli, ["doctor", "--json", "--config", str(path)], catch_exceptions=False)
    doc = json.loads(r.output)
    assert r.exit_code == 2 and [c["id"] for c in doc["checks"]] == ["config.valid"]
    assert "buffer.batch_max_records" in doc["checks"][0]["message"]


def test_key_mode_0644_fails_with_the_chmod(pc: Pc) -> None:
    pc.key.chmod(0o644)
    _, checks = pc.doctor()
    assert checks["key.mode"]["result"] == "error" and "0644" in checks["key.mode"]["message"]
    assert f"chmod 600 {pc.key}" in checks["key.mode"]["fix"]
    pc.key.chmod(0o600)
    _, checks = pc.doctor()
    assert checks["key.mode"]["result"] == "ok"


def test_missing_key_and_central_key(pc: Pc) -> None:
    pc.key.unlink()
    (pc.root / "central.pub.pem").unlink()
    _, checks = pc.doctor()
    assert checks["key.present"]["result"] == "error" and "keys init" in checks["key.present"]["fix"]
    assert checks["config.central-key"]["result"] == "error"


def test_families_register_their_checks_by_one_line() -> None:
    """The core reaches the families only through agent/subsystems.py."""
    assert {f.name for f in FAMILIES} == {"serial", "camera"}
    names = {c.__module__ for c in doctor_checks()}
    assert names == {"drivers.serial.doctor", "drivers.camera.doctor"}


def test_the_core_imports_no_family() -> None:
    """agent/doctor names the families only as strings in agent/subsystems.py."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    for path in [*sorted((root / "agent" / "doctor").glob("*.py")), root / "agent" / "subsystems.py",
                 root / "core" / "doctor.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert not (node.module or "").startswith("drivers"), f"{path} imports {node.module}"
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("drivers") for a in node.names), path
