"""Plain-text rendering of `coop-receiver status` for a technician at a terminal."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def _when(ms: int | None) -> str:
    if not ms:
        return "never"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _gaps(gaps: list[list[int]]) -> str:
    if not gaps:
        return "none"
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in gaps)


def _extra(s: dict[str, Any]) -> list[str]:
    """The operator's lines (receiver/branches.py): last seen, chain, drift, backlog, last error, keys."""
    out = [f"  last seen        {_when(s.get('last_seen'))}", f"  chain            {s.get('chain', '?')}"]
    if s.get("clock_drift_ms") is not None:
        out.append(f"  clock drift      {s['clock_drift_ms'] / 1000:+.1f} s (branch clock minus receipt)")
    if s.get("backlog") is not None:
        out.append(f"  backlog          {s['backlog']} (reported acked_seq {s.get('reported_acked_seq')})")
    err = s.get("last_error")
    if err:
        out.append(f"  last error       {err['code']}: {err['reason']} ({_when(err['at'])})")
    for k in s.get("keys", []):
        span = f"seq {k['valid_from_seq'] or '?'}..{k['valid_to_seq'] or ''}"
        out.append(f"  key              {k['kid']} {k['state']} {span}")
    return out


def render_status(states: list[dict[str, Any]], health: dict[str, Any] | None = None) -> str:
    lines: list[str] = []
    for who, rx in sorted((health or {}).items()):
        broker = rx.get("broker", {})
        lines.append(f"receiver {who}: broker {broker.get('value', '?')} (since {_when(broker.get('at'))})")
        err = rx.get("last_error", {})
        if err.get("value"):
            lines.append(f"  last error       {err['value']} ({_when(err.get('at'))})")
    if not states:
        lines.append("no devices have sent anything yet")
    for s in states:
        lines.append(s["dev"] + ("" if s.get("registered", True) else "  (NOT REGISTERED: no usable public key)"))
        if not s.get("known"):
            lines.append(f"  nothing accepted yet; {s.get('rejections', 0)} rejections")
            lines += _extra(s)
            continue
        st = s["last_status"]
        status = (
            "none"
            if st is None
            else (
                f"{st.get('state')} (version {st.get('version', '?')}, "
                f"acked_seq {st.get('acked_seq', '?')}, backlog {st.get('backlog', {})})"
            )
        )
        lines += [
            f"  acked seq        {s['acked_seq']} (highest seen {s['highest_seq_seen']}, held {s['held_batches']})",
            f"  records          {s['records']} (duplicate ids {s['duplicate_record_ids']})",
            f"  gaps             {_gaps(s['gaps'])}",
            f"  chain breaks     {s['chain_breaks']}",
            f"  rejections       {s['rejections']}",
            f"  last batch       {_when(s['last_batch_at'])}",
            f"  status           {status}, received {_when(s['last_status_received_at'])}",
            f"  media            {s['media_complete']} complete, {s['media_pending']} pending",
        ]
        lines += _extra(s)
    return "\n".join(lines) + "\n"
