"""Config errors for technicians: 'key = value: what is allowed', one line per problem.

Shared by the agent's and the receiver's config, so both name keys, redact secrets and
scrub URL credentials the same way.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

SECRET_KEYS = {"password", "token", "secret"}
URL_CREDENTIALS = re.compile(r"(?i)([a-z][a-z0-9+.-]*://)[^/@\s]+@")


class ConfigError(Exception):
    """Config that cannot be used; str() is the message for the technician (one line per problem)."""

    def __init__(self, path: Path | None, problems: list[str]):
        self.problems = problems
        where = str(path) if path else "config"
        super().__init__("\n".join(f"{where}: {p}" for p in problems))


def _allowed_keys(root: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Walk the model along an error location to list the keys allowed at that place."""
    model: Any = root
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


def format_error(root: type[BaseModel], err: dict[str, Any]) -> str:
    loc = tuple(err["loc"])
    key = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc).replace(".[", "[") or "(top level)"
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(root, loc)
        hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
        return f"{key}: unknown key{hint}"
    value = err.get("input")
    shown = "" if isinstance(value, dict) else f" = {value!r}"
    if any(s in key for s in SECRET_KEYS) and "file" not in key:
        shown = " = **REDACTED**"
    shown = URL_CREDENTIALS.sub(r"\1***:***@", shown)  # rtsp://user:pass@ never reaches a terminal
    msg = err["msg"].removeprefix("Value error, ")
    return f"{key}{shown}: {msg}"


def config_error(root: type[BaseModel], exc: ValidationError, path: Path | None) -> ConfigError:
    return ConfigError(path, [format_error(root, dict(e)) for e in exc.errors()])


def read_toml(path: Path) -> dict[str, Any]:
    """The file as a dict, or a ConfigError that says what is wrong with the file itself."""
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
    return data
