"""`coopagent support-bundle`: one .tar.gz for the helpdesk, with no secret inside.

Members: doctor.json, status.json, config.json (redacted), logs.txt, versions.json, and each
device family's files (serial-devices.json, serial-frames.txt, camera-devices.json). Every
member goes through scrub_text() on the way in: the content of every secret file the
config names (broker and camera passwords, the API token) is replaced, as are stream URL
credentials, bearer tokens and PEM private keys, whatever wrote them.
"""

from __future__ import annotations

import io
import json
import platform
import re
import shutil
import socket
import subprocess
import tarfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from agent import __version__
from agent.config import AgentConfig, ConfigError, redacted
from agent.doctor.context import Context
from agent.subsystems import bundle_parts
from core.config.base import read_secret

REDACTED = "**REDACTED**"
_URL_CREDS = re.compile(r"([a-z][a-z0-9+.-]*://)[^/\s:@]+:[^/\s@]*@", re.IGNORECASE)
_BEARER = re.compile(r"(Bearer\s+)\S+", re.IGNORECASE)
_PEM_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.DOTALL)
_DISTS = ("paho-mqtt", "cryptography", "cbor2", "pydantic", "fastapi", "uvicorn", "pyserial",
          "opencv-python-headless", "onvif-zeep-async", "numpy")


def secret_values(cfg: AgentConfig) -> list[str]:
    """The content of every secret file the config names, to be replaced wherever it shows up."""
    files: list[Path] = [Path(cfg.api.token_file)]
    if cfg.uplink.password_file is not None:
        files.append(Path(cfg.uplink.password_file))
    files += [Path(cam.password_file) for cam in cfg.cameras if cam.password_file is not None]
    out = []
    for f in files:
        try:
            value = read_secret(f)
        except ValueError:
            continue
        if len(value) >= 4:  # shorter values would blank out ordinary words
            out.append(value)
    return sorted(out, key=len, reverse=True)


def scrub_text(text: str, secrets: list[str]) -> str:
    text = _PEM_KEY.sub(f"-----{REDACTED} PRIVATE KEY-----", text)
    text = _URL_CREDS.sub(rf"\1{REDACTED}@", text)
    text = _BEARER.sub(rf"\1{REDACTED}", text)
    for s in secrets:
        text = text.replace(s, REDACTED)
    return text


def _versions() -> dict[str, Any]:
    dists: dict[str, str | None] = {}
    for d in _DISTS:
        try:
            dists[d] = metadata.version(d)
        except metadata.PackageNotFoundError:
            dists[d] = None
    tools: dict[str, str | None] = {}
    for tool in ("ffmpeg", "ffprobe", "mosquitto", "systemctl"):
        tools[tool] = shutil.which(tool)
    return {"coopagent": __version__, "python": platform.python_version(), "platform": platform.platform(),
            "hostname": socket.gethostname(), "packages": dists, "tools": tools}


def _logs(minutes: int, log_files: tuple[Path, ...]) -> str:
    parts = []
    journalctl = shutil.which("journalctl")
    if journalctl is not None:
        out = subprocess.run([journalctl, "-u", "coopagent", "--since", f"-{minutes}min", "--no-pager",
                              "-o", "short-iso"], capture_output=True, text=True, timeout=60, check=False)
        parts.append(f"## journalctl -u coopagent --since -{minutes}min\n{out.stdout}{out.stderr}")
    else:
        parts.append("## journalctl is not available here")
    for f in log_files:
        try:
            text = f.read_text(errors="replace")
        except OSError as exc:
            parts.append(f"## {f}: {exc.strerror}")
            continue
        parts.append(f"## {f} (last 2000 lines)\n" + "\n".join(text.splitlines()[-2000:]))
    return "\n\n".join(parts) + "\n"


def write_bundle(config_path: Path | None, out: Path | None, minutes: int,
                 log_files: tuple[Path, ...] = ()) -> Path:
    from agent.cli.common import resolve_config
    from agent.cli.doctor_cmds import doctor_document, run_doctor

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = out or Path(f"coopagent-support-{socket.gethostname()}-{stamp}.tar.gz")
    findings, device = run_doctor(config_path)
    members: dict[str, str] = {"doctor.json": json.dumps(doctor_document(findings, device), indent=2)}
    secrets: list[str] = []
    try:
        cfg: AgentConfig | None = resolve_config(config_path)
    except ConfigError as exc:
        cfg = None
        members["config.json"] = json.dumps({"invalid": str(exc)}, indent=2)
    if cfg is not None:
        secrets = secret_values(cfg)
        ctx = Context.gather(cfg)
        members["config.json"] = json.dumps(redacted(cfg), indent=2, sort_keys=True)
        members["status.json"] = json.dumps(ctx.status if ctx.status is not None else
                                            {"running": False, "reason": ctx.status_reason}, indent=2)
        for name, text in bundle_parts(ctx, minutes).items():
            members[name] = text
    members["versions.json"] = json.dumps(_versions(), indent=2)
    members["logs.txt"] = _logs(minutes, log_files)
    out.parent.mkdir(parents=True, exist_ok=True)
    top = f"coopagent-support-{stamp}"
    with tarfile.open(out, "w:gz") as tar:
        for name, text in members.items():
            data = scrub_text(text, secrets).encode()
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o600
            tar.addfile(info, io.BytesIO(data))
    out.chmod(0o600)
    return out
