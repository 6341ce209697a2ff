"""Per branch (device) state for `coop-receiver status` and the metrics: what an operator asks first.

Everything comes from the database, so any receiver (or none running) answers the same:

* last seen: the latest of its last stored batch, its last status and its last rejection;
* acked seq: the highest contiguous seq stored (what the centre acked);
* backlog: what the branch itself reports in its signed status (records, batches, media bytes);
* chain: `ok`, `gaps` (verified batches wait beyond a missing seq), or `broken` (a batch that
  did not fit the chain was kept as evidence);
* clock drift: the status' `at` (the branch clock) minus the time the centre received it.
  It includes the broker's delivery delay, so only drift beyond seconds means a clock; a
  retained status delivered when a receiver starts is old and shows a false drift until
  the branch's next periodic status (the alert waits `for` longer than that period);
* last error: the latest rejection (code, reason, when);
* keys: every key with its state (active, retired, revoked, awaiting rotation).
"""

from __future__ import annotations

from typing import Any

from receiver.keys import DeviceRegistry
from receiver.store import ReceiverStore


def chain_state(state: dict[str, Any]) -> str:
    if state.get("chain_breaks"):
        return "broken"
    if state.get("gaps"):
        return "gaps"
    return "ok"


def branch_state(store: ReceiverStore, registry: DeviceRegistry, dev: str) -> dict[str, Any]:
    """store.device_state(dev) with the operator's view added (see the module doc)."""
    s = store.device_state(dev)
    entries = registry.entries(dev)
    s["registered"] = any(e.revoked_at is None for e in entries.values())
    s["keys"] = [e.as_json() for e in sorted(entries.values(), key=lambda e: (e.valid_from_seq or 1 << 62))]
    last = store.conn.execute(
        "SELECT at, code, reason, seq FROM rejections WHERE dev = ? ORDER BY rid DESC LIMIT 1", (dev,)
    ).fetchone()
    s["last_error"] = None if last is None else {"at": last[0], "code": last[1], "reason": last[2], "seq": last[3]}
    if not s.get("known"):
        s["last_seen"] = None if last is None else last[0]
        s["chain"] = "none"
        return s
    st = s.get("last_status") or {}
    received = s.get("last_status_received_at")
    seen = [t for t in (s.get("last_batch_at"), received, None if last is None else last[0]) if t]
    s["last_seen"] = max(seen) if seen else None
    s["chain"] = chain_state(s)
    s["backlog"] = st.get("backlog")
    s["reported_acked_seq"] = st.get("acked_seq")
    at = st.get("at")
    s["clock_drift_ms"] = at - received if isinstance(at, int) and received else None
    return s
