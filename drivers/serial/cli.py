"""`coopagent serial|scanner|scale|count ...`: technicians' tools for serial devices and stock-take."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import httpx
import serial
from pydantic import TypeAdapter, ValidationError
from serial.tools import list_ports

from core.cli import config_option, fail, handle_errors
from core.cli import load_config as resolve_config
from core.config.base import read_secret
from drivers.serial.config import ScannerConfig
from drivers.serial.diagnose import (
    SILENCE_HELP,
    Capture,
    Diagnosis,
    diagnose_scale,
    diagnose_scanner,
    toml_value,
)
from drivers.serial.scales import PROTOCOLS, ScaleConfig, ScaleConfigBase

BY_ID = Path("/dev/serial/by-id")
# The agent's config (agent.config.AgentConfig): this family may not import the agent and gets
# it through core.cli.load_config.
AgentConfig = Any


def _echo(obj: dict[str, Any]) -> None:
    click.echo(json.dumps(obj, ensure_ascii=False, default=str))
    sys.stdout.flush()


json_option = click.option(
    "--json", "as_json", is_flag=True, help="one JSON document per line, for machines"
)
explain_option = click.option(
    "--explain-after",
    type=click.FloatRange(0.5, 120),
    default=5.0,
    show_default=True,
    help="seconds without a parsed frame before saying why (sooner when bytes arrive that do not parse)",
)


def _report(diag: Diagnosis, as_json: bool) -> None:
    if as_json:
        _echo({"diagnosis": diag.as_dict()})
    else:
        click.echo(diag.text())
        sys.stdout.flush()


class _LiveLine:
    """The live weight line: rewritten in place on a terminal; elsewhere one line per change."""

    def __init__(self) -> None:
        self.tty = sys.stdout.isatty()
        self.last = ""

    def show(self, line: str, keep: bool) -> None:
        if self.tty:
            click.echo("\r" + line.ljust(len(self.last)), nl=keep)
        elif line != self.last or keep:
            click.echo(line)
        self.last = "" if keep else line
        sys.stdout.flush()

    def end(self) -> None:
        if self.tty and self.last:
            click.echo("")
        self.last = ""


# -- serial ----------------------------------------------------------------------------------
@click.group("serial")
def serial_group() -> None:
    """Serial ports and the command barcode sheet."""


@serial_group.command("list")
def serial_list() -> None:
    """Ports with their stable /dev/serial/by-id names (use those in the config)."""
    by_id: dict[str, str] = {}
    if BY_ID.is_dir():
        for link in sorted(BY_ID.iterdir()):
            by_id[str(link.resolve())] = str(link)
    ports = sorted(list_ports.comports(), key=lambda p: p.device)
    if not ports:
        click.echo("no serial ports found")
    for p in ports:
        click.echo(f"{p.device:<16} {by_id.get(p.device, '(no by-id link)'):<60} {p.description} [{p.hwid}]")


@serial_group.command("barcodes")
@config_option
@click.option(
    "--out",
    "out",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="sheet.pdf or sheet.png (PNG: one file per page)",
)
@click.option(
    "--location", "locations", multiple=True, help="add open/recount/location codes for this location"
)
@handle_errors
def serial_barcodes(config_path: Path | None, out: Path, locations: tuple[str, ...]) -> None:
    """Print the command barcodes (modes, quantities, count open/close) as a PDF or PNG sheet."""
    from drivers.serial.barcodes import sheet_rows, write_sheet
    from drivers.serial.workflows.commands import NAME_RE

    cfg = resolve_config(config_path)
    bad = [loc for loc in locations if not NAME_RE.match(loc)]
    if bad:
        fail(f"--location {bad[0]!r}: use 1-40 letters, digits or / _ . -")
    try:
        files = write_sheet(out, sheet_rows(cfg.workflow.command_prefix, list(locations)))
    except ValueError as exc:
        fail(str(exc))
    for f in files:
        click.echo(f"wrote {f}")


# -- scanner test ------------------------------------------------------------------------------
def _scanner_cfg(cfg: AgentConfig, target: str, suffix: str | None, baudrate: int | None) -> ScannerConfig:
    found = next((s for s in cfg.scanners if s.name == target), None)
    base: dict[str, Any] = found.model_dump() if found else {"name": "test", "port": target}
    if suffix is not None:
        base["suffix"] = suffix
    if baudrate is not None:
        base["baudrate"] = baudrate
    if found is None and not target.startswith("/"):
        names = ", ".join(s.name for s in cfg.scanners) or "none configured"
        fail(f"{target!r} is neither a configured scanner ({names}) nor a device path")
    try:
        return ScannerConfig.model_validate(base)
    except ValidationError as exc:
        fail(f"{target}: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}")
        raise


@click.group("scanner")
def scanner_group() -> None:
    """Barcode scanners."""


@scanner_group.command("test")
@config_option
@click.argument("target")
@click.option("--suffix", default=None, help='frame end, e.g. "\\r" (default: the config\'s, or CR)')
@click.option("--baudrate", type=int, default=None)
@click.option("--seconds", type=float, default=None, help="stop after this long (default: Ctrl-C)")
@click.option("--count", "count", type=int, default=None, help="stop after this many reads")
@explain_option
@json_option
@handle_errors
def scanner_test(
    config_path: Path | None,
    target: str,
    suffix: str | None,
    baudrate: int | None,
    seconds: float | None,
    count: int | None,
    explain_after: float,
    as_json: bool,
) -> None:
    """Show live parsed reads from scanner NAME (from the config) or PORT; say why when bytes
    arrive that frame into no read, or when nothing arrives."""
    from drivers.serial.testers import scanner_reads

    cfg = resolve_config(config_path)
    sc = _scanner_cfg(cfg, target, suffix, baudrate)
    cap = Capture()
    n = 0
    try:
        for event in scanner_reads(sc, cfg.workflow, seconds, cap, explain_after):
            if isinstance(event, Diagnosis):
                _report(event, as_json)
                if event.state == "unparsed":
                    sys.exit(1)
                continue
            n += 1
            if as_json:
                _echo(event)
            else:
                click.echo(_scan_line(event))
            if count is not None and n >= count:
                break
    except (serial.SerialException, OSError) as exc:
        fail(f"{sc.port}: {exc}")
    except KeyboardInterrupt:
        pass
    _report(diagnose_scanner(sc, cap), as_json)


def _scan_line(read: dict[str, Any]) -> str:
    what = read.get("gtin") or read.get("item") or read.get("raw", "")
    line = f"{read.get('symbology', '?'):<10} {read.get('type', '?'):<16} {what}"
    if not read.get("valid", True):
        line += f"  INVALID: {read.get('reason', '')}"
    return line


# -- scale test --------------------------------------------------------------------------------
def _scale_cfg(cfg: AgentConfig, target: str, protocol: str | None, extra: dict[str, Any]) -> ScaleConfigBase:
    found = next((s for s in cfg.scales if s.name == target), None)
    if found is None and not target.startswith("/"):
        names = ", ".join(s.name for s in cfg.scales) or "none configured"
        fail(f"{target!r} is neither a configured scale ({names}) nor a device path")
    if found is None and protocol is None:
        fail(f"--protocol is needed for a port: one of {', '.join(PROTOCOLS)}")
    base: dict[str, Any] = found.model_dump() if found else {"name": "test", "port": target}
    if protocol is not None and protocol != base.get("protocol"):
        base = {k: base[k] for k in ("name", "port")} | {"protocol": protocol}
    base.update({k: v for k, v in extra.items() if v is not None})
    try:
        scale: ScaleConfigBase = TypeAdapter(ScaleConfig).validate_python(base)
    except ValidationError as exc:
        err = exc.errors()[0]
        fail(f"{target}: {'.'.join(map(str, err['loc']))}: {err['msg']}")
        raise
    return scale


@click.group("scale")
def scale_group() -> None:
    """Scales."""


@scale_group.command("test")
@config_option
@click.argument("target")
@click.option("--protocol", type=click.Choice(sorted(PROTOCOLS)), default=None)
@click.option("--baudrate", type=int, default=None)
@click.option("--zero", "actions", flag_value="zero", multiple=True, help="zero the scale first")
@click.option("--tare", "actions", flag_value="tare", multiple=True, help="tare first")
@click.option("--clear-tare", "actions", flag_value="clear-tare", multiple=True, help="clear the tare first")
@click.option("--seconds", type=float, default=None, help="stop after this long (default: Ctrl-C)")
@click.option("--count", "count", type=int, default=None, help="stop after this many readings")
@explain_option
@json_option
@handle_errors
def scale_test(
    config_path: Path | None,
    target: str,
    protocol: str | None,
    baudrate: int | None,
    actions: tuple[str, ...],
    seconds: float | None,
    count: int | None,
    explain_after: float,
    as_json: bool,
) -> None:
    """Show the live weight (stable/motion, overload) from scale NAME or PORT, marking the readings
    the agent would record; say why when nothing parses or nothing arrives. Ends with a summary."""
    from drivers.serial.testers import scale_readings, weight_line

    cfg = resolve_config(config_path)
    sc = _scale_cfg(cfg, target, protocol, {"baudrate": baudrate})
    cap = Capture()
    live = _LiveLine()
    n = 0
    try:
        for event in scale_readings(sc, seconds, list(actions), cap, explain_after):
            if isinstance(event, Diagnosis):
                live.end()
                _report(event, as_json)
                sys.exit(1)
            if as_json:
                _echo(event)
            else:
                live.show(weight_line(event), keep="record" in event or "state" in event)
            n += 1
            if count is not None and n >= count:
                break
    except (serial.SerialException, OSError) as exc:
        fail(f"{sc.port}: {exc}")
    except KeyboardInterrupt:
        pass
    live.end()
    _report(diagnose_scale(sc, cap), as_json)


@scale_group.command("detect")
@click.argument("port")
@click.option("--dwell", type=click.FloatRange(0.2, 5), default=0.5, show_default=True, help="seconds per setting")
@click.option("--all-rates", is_flag=True, help="try every baud rate even after one reads")
@json_option
@handle_errors
def scale_detect(port: str, dwell: float, all_rates: bool, as_json: bool) -> None:
    """Try the known scale protocols and line settings on PORT and name the ones that read, best first."""
    from drivers.serial.detect import detect

    def progress(msg: str) -> None:
        if not as_json:
            click.echo(f"  {msg}")
            sys.stdout.flush()

    try:
        result = detect(port, dwell, all_rates, progress)
    except (serial.SerialException, OSError) as exc:
        fail(f"{port}: {exc}")
        raise
    if as_json:
        _echo(result.as_dict())
    elif not result.matches:
        heard = sum(a.bytes_seen for a in result.attempts)
        click.echo(
            f"no setting read a frame in {result.seconds:.0f} s ("
            + (f"{heard} bytes heard, none parsed: a protocol we do not know? try protocol = \"line-regex\")"
               if heard else f"no byte arrived: {SILENCE_HELP})")
        )
    else:
        click.echo(f"reads with (best first, {result.seconds:.0f} s):")
        for i, m in enumerate(result.matches[:5], 1):
            click.echo(f"  {i}. {m.toml()}  ({m.frames} frames, {m.refused} refused; e.g. {m.example})")
        best = result.matches[0]
        click.echo("\n[[scales]]\nname = \"NAME\"\n" + f"port = \"{port}\"")
        for k, v in best.settings.items():
            click.echo(f"{k} = {toml_value(v)}")
    if not result.matches:
        sys.exit(1)


# -- count (through the running agent's local API) --------------------------------------------
def _api(cfg: AgentConfig, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    try:
        token = read_secret(cfg.api.token_file)
    except ValueError as exc:
        fail(str(exc))
    url = f"http://{cfg.api.listen}{path}"
    try:
        r = httpx.request(method, url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=15)
    except httpx.HTTPError as exc:
        fail(f"cannot reach the agent at {url}: {exc} (is `coopagent run` running?)")
        raise
    data: dict[str, Any] = (
        r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
    )
    if r.status_code >= 400:
        fail(f"{data.get('error') or data.get('detail') or r.text} (HTTP {r.status_code})")
    return data


@click.group("count")
def count_group() -> None:
    """Stock-take sessions on the running agent."""


@count_group.command("open")
@config_option
@click.argument("location")
@click.option("--device", default=None, help="the scanner that counts (default: the only one)")
@click.option(
    "--blind/--no-blind", default=None, help="hide running totals (default: [workflow] blind_count)"
)
@click.option("--recount", is_flag=True, help="recount the location's last closed session")
@handle_errors
def count_open(
    config_path: Path | None, location: str, device: str | None, blind: bool | None, recount: bool
) -> None:
    """Open a count session at LOCATION."""
    data = _api(
        resolve_config(config_path),
        "POST",
        "/v1/count/open",
        {"location": location, "device": device, "blind": blind, "recount": recount},
    )
    click.echo(
        f"session {data['session']} open at {location} on {data['device']}"
        + (" (blind)" if data.get("blind") else "")
        + (f", recount of {data['recount_of']}" if data.get("recount_of") else "")
    )


@count_group.command("close")
@config_option
@click.argument("session", required=False)
@click.option("--device", default=None, help="close this scanner's session instead of naming it")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def count_close(config_path: Path | None, session: str | None, device: str | None, as_json: bool) -> None:
    """Close SESSION (or --device's session) and print its totals per GTIN."""
    if session is None and device is None:
        fail("name the SESSION or give --device")
    data = _api(
        resolve_config(config_path), "POST", "/v1/count/close", {"session": session, "device": device}
    )
    if as_json:
        _echo(data)
        return
    click.echo(f"session {data['session']} closed: {data['lines']} lines")
    for gtin, t in data["totals"].items():
        click.echo(
            f"  {gtin}  "
            + (f"qty {t['qty']}" if "qty" in t else "")
            + (f"  {t['weight_g']} g" if "weight_g" in t else "")
        )


@count_group.command("status")
@config_option
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def count_status(config_path: Path | None, as_json: bool) -> None:
    """Open sessions (blind sessions show only how many lines were counted)."""
    data = _api(resolve_config(config_path), "GET", "/v1/count/status")
    if as_json:
        _echo(data)
        return
    if not data["sessions"]:
        click.echo("no open sessions")
    for s in data["sessions"]:
        click.echo(
            f"{s['session']}  {s['location']:<12} {s['device']:<12} {s['lines']} lines"
            + (" (blind)" if s["blind"] else "")
        )


def register(cli: click.Group) -> None:
    """Add this family's command groups to the top-level CLI."""
    for group in (serial_group, scanner_group, scale_group, count_group):
        cli.add_command(group)
