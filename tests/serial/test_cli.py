"""The technicians' commands: serial list, barcodes, scanner test, scale test, count open/status/close."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from agent.cli.main import cli
from drivers.serial.sim.devices import MtSicsSim, ScannerSim
from drivers.serial.sim.pty import PtyLink
from tests.serial.conftest import CountApi


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_serial_list_runs() -> None:
    r = invoke("serial", "list")
    assert r.exit_code == 0 and r.output.strip()


def test_barcode_sheet_pdf_and_errors(tmp_path: Path) -> None:
    r = invoke("serial", "barcodes", "--out", str(tmp_path / "s.pdf"), "--location", "A-12")
    assert r.exit_code == 0, r.output
    pdf = (tmp_path / "s.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and pdf.count(b"/Type /Page\n") + pdf.count(b"/Type /Page ") >= 2
    assert invoke("serial", "barcodes", "--out", str(tmp_path / "s.svg")).exit_code == 2
    bad = invoke("serial", "barcodes", "--out", str(tmp_path / "x.pdf"), "--location", "no spaces")
    assert bad.exit_code == 2 and "--location 'no spaces'" in bad.output


@pytest.mark.slow
def test_barcode_sheet_png_pages(tmp_path: Path) -> None:
    """PNG rendering (cairo, 150 dpi) takes seconds: one file per page."""
    r = invoke("serial", "barcodes", "--out", str(tmp_path / "s.png"))
    assert r.exit_code == 0, r.output
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "s-2.png").exists() and "wrote" in r.output


def _run_cli_while(args: list[str], keep_doing: Callable[[], None]) -> Result:
    """Run a blocking CLI command in a thread, repeating keep_doing until it returns (bounded by
    the command's own --seconds); the reads are resent because the CLI may open its port late."""
    out: list[Result] = []
    t = threading.Thread(target=lambda: out.append(CliRunner().invoke(cli, args, catch_exceptions=False)))
    t.start()
    while t.is_alive():
        keep_doing()
        t.join(timeout=0.1)
    return out[0]


def test_scanner_test_prints_parsed_reads(pty_pair: Callable[[str], PtyLink]) -> None:
    link = pty_pair("cli-scan")
    sim = ScannerSim(link.device_side).start()
    try:
        r = _run_cli_while(
            ["scanner", "test", str(link.agent_side), "--count", "2", "--seconds", "20", "--json"],
            lambda: sim.scan("]E05901234123457"),
        )
    finally:
        sim.stop()
    assert r.exit_code == 0, r.output
    assert '"gtin": "05901234123457"' in r.output and '"symbology": "ean-13"' in r.output


def test_scale_test_zeroes_and_marks_recorded_weights(pty_pair: Callable[[str], PtyLink]) -> None:
    link = pty_pair("cli-scale")
    sim = MtSicsSim(link.device_side).start()
    sim.place(1200)
    try:
        r = invoke(
            "scale",
            "test",
            str(link.agent_side),
            "--protocol",
            "mt-sics",
            "--tare",
            "--count",
            "4",
            "--seconds",
            "20",
            "--json",
        )
    finally:
        sim.stop()
    assert r.exit_code == 0, r.output
    assert "T" in sim.commands
    assert '"status": "info"' in r.output  # the tare acknowledgement
    assert json.loads(r.output.splitlines()[-1])["diagnosis"]["state"] == "ok"


def test_scale_test_human_output_is_a_weight_line(pty_pair: Callable[[str], PtyLink]) -> None:
    """Without --json: one line per change of the weight, marked when the agent would record it,
    then a summary with the counters."""
    link = pty_pair("cli-scale-human")
    sim = MtSicsSim(link.device_side).start()
    sim.place(1200)
    try:
        r = invoke("scale", "test", str(link.agent_side), "--protocol", "mt-sics", "--count", "6", "--seconds", "20")
    finally:
        sim.stop()
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == "    1.200 kg  stable  -> recorded"
    assert lines[-1].startswith("frames parse: ") and ", 6 frames, 0 refused" in lines[-1]
    assert "{" not in r.output


def test_target_errors() -> None:
    r = invoke("scanner", "test", "frontdoor")
    assert r.exit_code == 2 and "neither a configured scanner" in r.output
    r = invoke("scale", "test", "/dev/ttyNOPE0")
    assert r.exit_code == 2 and "--protocol is needed" in r.output
    r = invoke("scale", "test", "/dev/ttyNOPE0", "--protocol", "cas", "--seconds", "1")
    assert r.exit_code == 2 and "/dev/ttyNOPE0" in r.output


def test_count_commands_through_the_agent_api(count_api: CountApi) -> None:
    cfg = str(count_api.config_path)
    r = invoke("count", "open", "A-12", "--config", cfg)
    assert r.exit_code == 0 and "open at A-12 on room (blind)" in r.output, r.output
    r = invoke("count", "status", "--config", cfg)
    assert "A-12" in r.output and "0 lines (blind)" in r.output
    r = invoke("count", "open", "B-1", "--config", cfg)
    assert r.exit_code == 2 and "already has session" in r.output and "HTTP 409" in r.output
    r = invoke("count", "close", "--device", "room", "--config", cfg)
    assert r.exit_code == 0 and "closed: 0 lines" in r.output
    assert invoke("count", "status", "--config", cfg).output.strip() == "no open sessions"


def test_count_without_a_running_agent_says_so(tmp_path: Path) -> None:
    from tests.peers.net import free_port

    tok = tmp_path / "tok"
    tok.write_text("x" * 32)
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f'[api]\nlisten = "127.0.0.1:{free_port()}"\ntoken_file = "{tok}"\n')
    r = invoke("count", "status", "--config", str(cfg))
    assert r.exit_code == 2 and "cannot reach the agent" in r.output and "coopagent run" in r.output
    cfg.write_text(f'[api]\ntoken_file = "{tmp_path / "missing"}"\n')
    r = invoke("count", "status", "--config", str(cfg))
    assert r.exit_code == 2 and "cannot read secret file" in r.output
