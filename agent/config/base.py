"""The one base every config model uses: unknown keys are errors, values are checked on assignment."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


def secret_path(path: Path) -> Path:
    """A relative secret file name is looked up in systemd's $CREDENTIALS_DIRECTORY (LoadCredential=)."""
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if not path.is_absolute() and creds:
        return Path(creds) / path
    return path


def read_secret(path: Path) -> str:
    """Read a secret file's first line; the error names the file, never the content."""
    p = secret_path(path)
    try:
        return p.read_text().strip()
    except OSError as exc:
        raise ValueError(f"cannot read secret file {p}: {exc.strerror}") from exc
