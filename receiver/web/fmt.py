"""Formatting shared by the pages, the CSV and the messages: times in UTC, amounts in minor units."""

from __future__ import annotations

from datetime import UTC, datetime


def ts(ms: int | None) -> str:
    """Epoch ms as 'YYYY-MM-DD HH:MM:SS.mmm UTC' (the branch's and the centre's clocks are both UTC)."""
    if ms is None:
        return "-"
    d = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return d.strftime("%Y-%m-%d %H:%M:%S.") + f"{d.microsecond // 1000:03d} UTC"


def parse_local(value: str, name: str) -> int | None:
    """A time from a form: '' is none; ISO-8601 (from <input type=datetime-local>, taken as UTC) or epoch ms."""
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return int(value)
    try:
        d = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name} = {value!r}: give a date and time like 2026-11-29T14:00 (UTC)") from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return int(d.timestamp() * 1000)


def money(minor: int | None, currency: str = "KWD") -> str:
    """Fils (or cents) as the currency's major unit: KWD has 3 decimals, most others 2."""
    if minor is None:
        return "-"
    digits = 3 if currency in ("KWD", "BHD", "OMR", "JOD", "IQD", "LYD", "TND") else 2
    sign = "-" if minor < 0 else ""
    whole, frac = divmod(abs(minor), 10**digits)
    return f"{sign}{whole}.{frac:0{digits}d} {currency}"


def iso_seconds(sec: int) -> str:
    """Epoch seconds as the value of an <input type=datetime-local step=1> (UTC)."""
    return datetime.fromtimestamp(sec, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
