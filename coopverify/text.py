"""What a person reads in the verdict: times in UTC and each record in one line."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any


def ts(ms: Any) -> str:
    """Epoch milliseconds as 'YYYY-MM-DD HH:MM:SS.mmm UTC' (the spec's times are all UTC)."""
    if type(ms) is not int:
        return f"<time {ms!r}>"
    try:
        d = datetime.fromtimestamp(ms / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return f"<time {ms}>"
    return d.strftime("%Y-%m-%d %H:%M:%S.") + f"{d.microsecond // 1000:03d} UTC"


def _pick(data: Mapping[str, Any], *keys: str) -> str:
    return ", ".join(f"{k} {data[k]}" for k in keys if k in data and not isinstance(data[k], (dict, list, bytes)))


def describe(rec: Mapping[str, Any]) -> str:
    """One line for a record of any kind: what happened, in the terms of its kind's fields."""
    kind, data = rec.get("kind"), rec.get("data")
    if not isinstance(data, Mapping):
        return f"{kind} {rec.get('id')}"
    if kind == "sale":
        flags = " ".join(f for f in ("void", "refund") if data.get(f))
        lines = data.get("lines")
        n = f", {len(lines)} lines" if isinstance(lines, list) else ""
        what = f"sale {flags.upper() + ' ' if flags else ''}receipt {data.get('receipt')}"
        return f"{what} (till {data.get('till')}, total {data.get('total')} {data.get('currency', '')}{n})"
    if kind == "media":
        return f"{data.get('type')} {data.get('media')} of camera {data.get('camera')}"
    if kind == "stock_move":
        return f"stock_move {data.get('type')} ({_pick(data, 'gtin', 'qty', 'weight_g', 'doc', 'from', 'to')})"
    detail = _pick(data, *list(data)[:4])
    return f"{kind} ({detail})" if detail else str(kind)
