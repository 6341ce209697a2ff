"""Clip rules: which committed records ask for a clip of which camera, with pre- and post-roll.

The listener runs on the core's notifier thread (every committed record, in commit order),
so it only matches and enqueues; the Clipper waits for the post-roll and cuts.
Matching: every key in `match` must hold in the record's data: a value = equal (numbers and
their text are the same: till 3 == "3"), a list = any of, true = present and truthy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from core.interfaces import StoredRecord
from drivers.camera.clipper import ClipRequest
from drivers.camera.config import ClipRuleConfig

log = logging.getLogger(__name__)


def _same(got: Any, want: Any) -> bool:
    if want is True:
        return bool(got)
    if (
        isinstance(want, (int, float, str))
        and not isinstance(want, bool)
        and got is not None
        and not isinstance(got, (bool, dict, list))
    ):
        return str(got) == str(want)
    return bool(got == want)


def matches(rule: ClipRuleConfig, record: StoredRecord) -> bool:
    if record["kind"] != rule.kind or (rule.src is not None and record.get("src") != rule.src):
        return False
    data = record.get("data") or {}
    for key, want in rule.match.items():
        got = data.get(key)
        if isinstance(want, list):
            if not any(_same(got, w) for w in want):
                return False
        elif not _same(got, want):
            return False
    return True


class RuleListener:
    def __init__(self, rules: Sequence[ClipRuleConfig], request: Callable[[ClipRequest], None]):
        self.rules = list(rules)
        self.request = request

    def __call__(self, records: list[StoredRecord]) -> None:
        for rec in records:
            if rec["kind"] == "media":
                continue
            for rule in self.rules:
                if not matches(rule, rec):
                    continue
                req = ClipRequest(
                    rule.camera,
                    rec["at"] - int(rule.pre_s * 1000),
                    rec["at"] + int(rule.post_s * 1000),
                    {"record": rec["id"], "kind": rec["kind"], "rule": rule.name},
                )
                try:
                    self.request(req)
                except Exception:  # a bad request must not break the core's notifier thread
                    log.exception("clip rule %s could not queue a clip for record %s", rule.name, rec["id"])
