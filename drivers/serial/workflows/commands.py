"""Command barcodes: how a dock or stock room with a scanner and no screen is driven.

Grammar (PREFIX is workflow.command_prefix, "CMD:" by default; letters are case-insensitive):
  PREFIX MODE:<receive|issue|transfer|waste|count|scan-only>   switch what item scans mean
  PREFIX DOC:<document>      set the delivery / transfer document   (DOC:CLEAR forgets it)
  PREFIX LOC:<location>      set the location (receive: to; issue, waste, transfer: from; count: where)
  PREFIX TO:<location>       set the destination of transfers
  PREFIX QTY:<n>             the next item scan counts n times (1..workflow.max_multiplier)
  PREFIX COUNT:OPEN:<loc>    open a stock-take session at loc on this scanner
  PREFIX COUNT:RECOUNT:<loc> open a recount of loc (names the last closed session there)
  PREFIX COUNT:CLOSE         close this scanner's session (writes the totals)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9/_.-]{0,39}$")
MODES = ("receive", "issue", "transfer", "waste", "count", "scan-only")


class CommandError(ValueError):
    """A command barcode that cannot be carried out; the message says why (it goes into the scan record)."""


@dataclass(frozen=True)
class Command:
    action: str  # mode, doc, loc, to, qty, count-open, count-recount, count-close
    arg: str | int | None = None


def _name(kind: str, value: str) -> str:
    if not NAME_RE.match(value):
        raise CommandError(
            f"{kind} {value!r} must be 1-40 letters, digits or / _ . - (starting with a letter or digit)"
        )
    return value


def parse_command(text: str, prefix: str = "CMD:", max_multiplier: int = 9999) -> Command:
    """text is the whole read including the prefix."""
    if not text.upper().startswith(prefix.upper()):
        raise CommandError(f"not a command (does not start with {prefix!r})")
    parts = text[len(prefix) :].split(":")
    verb = parts[0].upper()
    args = parts[1:]
    if verb == "MODE" and len(args) == 1:
        mode = args[0].lower()
        if mode not in MODES:
            raise CommandError(f"unknown mode {args[0]!r}; one of {', '.join(MODES)}")
        return Command("mode", mode)
    if verb == "DOC" and len(args) == 1:
        return Command("doc", None if args[0].upper() == "CLEAR" else _name("document", args[0]))
    if verb in ("LOC", "TO") and len(args) == 1:
        return Command(verb.lower(), _name("location", args[0]))
    if verb == "QTY" and len(args) == 1:
        if not args[0].isdigit() or not 1 <= int(args[0]) <= max_multiplier:
            raise CommandError(f"quantity {args[0]!r} must be a whole number from 1 to {max_multiplier}")
        return Command("qty", int(args[0]))
    if verb == "COUNT" and args:
        sub = args[0].upper()
        if sub in ("OPEN", "RECOUNT") and len(args) == 2:
            return Command(f"count-{sub.lower()}", _name("location", args[1]))
        if sub == "CLOSE" and len(args) == 1:
            return Command("count-close")
    raise CommandError(f"unknown command {text[:64]!r} (see `coopagent serial barcodes` for the sheet)")


def sheet_commands(prefix: str = "CMD:") -> list[tuple[str, str]]:
    """The commands printed on the standard sheet: (barcode text, label)."""
    rows = [(f"{prefix}MODE:{m.upper()}", f"Mode: {m}") for m in MODES]
    rows += [(f"{prefix}QTY:{n}", f"Next item x{n}") for n in (2, 3, 4, 5, 6, 10, 12, 24)]
    rows += [
        (f"{prefix}DOC:CLEAR", "Forget the document"),
        (f"{prefix}COUNT:CLOSE", "Close my count session"),
    ]
    return rows
