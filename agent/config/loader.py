"""Read TOML into AgentConfig; turn every validation error into 'key = value: what is allowed'."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from agent.config.model import AgentConfig

SECRET_KEYS = {"password", "token", "secret"}
URL_CREDENTIALS = re.compile(r"(?i)([a-z][a-z0-9+.-]*://)[^/@\s]+@")


class ConfigError(Exception):
    """Config that cannot be used; str() is the message for the technician (one line per problem)."""

    def __init__(self, path: Path | None, problems: list[str]):
        self.problems = problems
        where = str(path) if path else "config"
        super().__init__("\n".join(f"{where}: {p}" for p in problems))


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """Walk the model along an error location to list the keys allowed at that place."""
    model: Any = AgentConfig
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return []
        ann = field.annotation
        args = getattr(ann, "__args__", None)
        model = args[0] if args else ann
    if isinstance(model, type) and issubclass(model, BaseModel):
        return sorted(model.model_fields)
    return []


def _format(err: dict[str, Any]) -> str:
    loc = tuple(err["loc"])
    key = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc).replace(".[", "[") or "(top level)"
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(loc)
        hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
        return f"{key}: unknown key{hint}"
    value = err.get("input")
    shown = "" if isinstance(value, dict) else f" = {value!r}"
    if any(s in key for s in SECRET_KEYS) and "file" not in key:
        shown = " = **REDACTED**"
    shown = URL_CREDENTIALS.sub(r"\1***:***@", shown)  # rtsp://user:pass@ never reaches a terminal
    msg = err["msg"].removeprefix("Value error, ")
    return f"{key}{shown}: {msg}"


def parse_config(data: dict[str, Any], path: Path | None = None) -> AgentConfig:
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(path, [_format(dict(e)) for e in exc.errors()]) from None


def load_config(path: Path | None) -> AgentConfig:
    """Load the file, or the embedded defaults when path is None (the demo and tests use those)."""
    if path is None:
        return AgentConfig()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(path, ["file not found (use --config FILE)"]) from None
    except OSError as exc:
        raise ConfigError(path, [f"cannot read: {exc.strerror}"]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(path, [f"not valid TOML: {exc}"]) from None
    return parse_config(data, path)


def redacted(cfg: AgentConfig) -> dict[str, Any]:
    """The effective config as plain data, safe to print: secrets are files, and their names are shown, not content."""
    data = cfg.model_dump(mode="json")
    return data
