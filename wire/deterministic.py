"""Is a CBOR payload in deterministic encoding (RFC 8949 section 4.2.1)? Exact, and fast for batches.

The authoritative test is to re-encode the decoded value deterministically and compare
bytes (`wire.cose.dumps_deterministic`). cbor2's canonical encoder costs ~15 us per
record here (it encodes every map key separately to sort them), which alone would cap
the receiver near 60,000 records/s. So a fast path proves the same thing in two cheaper
steps, and anything it cannot prove goes to the authoritative test:

1. cbor2's plain encoder, given the decoded value, writes every head in its shortest
   form, every length definite, and map entries in the order they were decoded. If its
   output equals the received bytes, the bytes have shortest heads, definite lengths,
   no duplicate keys (a duplicate would have collapsed on decoding), and map keys in wire
   order.
2. A walk then checks that every map's keys are in deterministic order. For ASCII text
   keys that order (bytewise over the encoded keys) is: shorter first, then
   lexicographic. The walk gives up (-> authoritative test) on anything else: a non-text
   or non-ASCII key, a float (whose shortest form step 1 does not check), a tag or any
   other type.

tests/receiver/test_deterministic.py checks the fast path against the authoritative one
on generated values.
"""

from __future__ import annotations

from typing import Any

import cbor2

from wire.cose import dumps_deterministic

_SIMPLE = frozenset((str, bytes, int, bool, type(None)))
_CONTAINERS = frozenset((dict, list))
# Verdicts on key tuples: records of one kind repeat the same keys thousands of times, so
# each distinct tuple is judged once. Bounded: cleared when it grows past _CACHE_MAX.
_order_ok: dict[tuple[Any, ...], bool] = {}
_CACHE_MAX = 4096


def _keys_in_order(keys: tuple[Any, ...]) -> bool:
    try:
        joined = "".join(keys)  # TypeError for any non-text key
    except TypeError:
        return False
    return joined.isascii() and list(keys) == sorted(sorted(keys), key=len)


def _shape_ok(obj: Any) -> bool:
    """True when every map below obj has ASCII text keys in deterministic order and no value needs care."""
    t = type(obj)
    if t is dict:
        keys = tuple(obj)
        ok = _order_ok.get(keys)
        if ok is None:
            if len(_order_ok) >= _CACHE_MAX:
                _order_ok.clear()
            ok = _order_ok[keys] = _keys_in_order(keys)
        if not ok:
            return False
        values: Any = obj.values()
    elif t is list:
        values = obj
    else:
        return t in _SIMPLE
    simple, containers = _SIMPLE, _CONTAINERS
    for v in values:
        tv = type(v)
        if tv in simple:
            continue
        if tv not in containers or not _shape_ok(v):
            return False
    return True


def is_deterministic(value: Any, raw: bytes) -> bool:
    """Whether `raw` (which decoded to `value`) is the deterministic encoding of `value`."""
    if cbor2.dumps(value) == raw and _shape_ok(value):
        return True
    return dumps_deterministic(value) == raw
