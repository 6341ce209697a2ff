"""Where the receiver's CPU goes: cProfile output (receiver/profiling.py) summed into ingest stages.

Why rules and a call graph rather than a list of functions: much of the CPU is spent in
shared leaves (a builtin like `execute`, `dumps` or `pickle.loads`) that mean one stage or
another depending on who called them. Each function's own time (tottime) is therefore
handed to the stage of its nearest ancestor that a rule names, walking up the call graph
pstats records (callers, with the time spent per caller). Beyond the first caller the walk
has only the profile's per-edge totals, so it assumes, as gprof does, that a function costs
the same per call whichever caller it came from. A root that no rule names is "other".

The RULES table is meant to be edited: when the ingest path changes (new functions, a
renamed one), add or change a line and re-run `bench/bench_centre_cpu.py --from-profiles DIR`
on the saved profiles, or the whole bench. `--show-unmatched` lists the functions whose time
ended in "other", biggest first, to see which rule is missing.
"""

from __future__ import annotations

import fnmatch
import pstats
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# The stages, in the order the report shows them, with what each one means.
STAGES: dict[str, str] = {
    "mqtt": "paho's network thread: reading, parsing and queueing inbound PUBLISHes, writing queued packets",
    "screen": "the screener thread: each batch's SHA-256 and the lookup of already stored ones (its SQL too)",
    "verifier_ipc": "handing batches to the verifier process and verdicts back (pickle, pipes)",
    "decode": "COSE_Sign1 and payload CBOR decoding",
    "determinism": "the deterministic-encoding check of the payload (RFC 8949 4.2.1)",
    "ed25519_verify": "the Ed25519 signature check, with the Sig_structure it covers",
    "record_checks": "per-record and batch field checks (check_batch, _rows)",
    "chain": "chain and seq logic in the worker (on_batch, device state, dispatch, batch hash)",
    "key_registry": "the key registry in the worker (kid checks, the rotation scan of every stored batch's rows)",
    "database": "SQL statements other than COMMIT (batches, records, devices, savepoints, gaps)",
    "commit": "COMMIT (SQLite: the WAL fsync; PostgreSQL: the round trip to its flush)",
    "ack": "signing the seq acks and publishing them, PUBACKs, resend requests",
    "housekeeping": "the worker's idle ticks (health, media, refused publishes, pruning)",
    "startup": "building the receiver after the profile starts: imports, database, spawning the verifier",
    "other": "whatever no rule names (the worker loop's own queue handling, logging, ...)",
}


@dataclass(frozen=True)
class Rule:
    stage: str
    # fnmatch pattern over "PATH:FUNCTION", PATH relative to the repo, site-packages or the stdlib ("~" a builtin)
    callee: str
    caller: str | None = None  # when set, only calls from a matching caller


# First match wins, checked at every step up from a function to its callers.
RULES: list[Rule] = [
    # the signature: the Rust/OpenSSL verify, and the Sig_structure encoded for it in open_sign1
    Rule("ed25519_verify", "~:<method 'verify' of *Ed25519PublicKey*"),
    Rule("ed25519_verify", "~:<built-in method *dumps>", "wire/sign1.py:open_sign1"),
    Rule("ed25519_verify", "cbor2/*:dumps", "wire/sign1.py:open_sign1"),
    # the batch's hash is for the chain (prev of the next batch, duplicate detection)
    Rule("chain", "~:<built-in method _hashlib.openssl_sha256>", "wire/batches.py:check_batch"),
    Rule("chain", "~:<method 'digest' of '_hashlib.HASH' objects>", "wire/batches.py:check_batch"),
    # the screener (receiver/screen.py): its lookup's SQL is its own; its handing over to the worker
    # queue is its; paho's thread putting into the screener's inbox is MQTT receive
    Rule("screen", "receiver/db.py:*", "receiver/screen.py:*"),
    Rule("screen", "receiver/pg.py:*", "receiver/screen.py:*"),
    Rule("mqtt", "receiver/screen.py:put_until", "receiver/server.py:_on_message"),
    Rule("determinism", "wire/deterministic.py:is_deterministic"),
    Rule("decode", "wire/sign1.py:open_sign1"),
    Rule("decode", "wire/batches.py:verify_signed"),
    Rule("record_checks", "wire/batches.py:_rows"),
    Rule("record_checks", "wire/batches.py:_manifest"),
    Rule("record_checks", "wire/batches.py:check_batch"),
    Rule("record_checks", "wire/batches.py:check_status"),
    # check() itself does nothing but call check_batch: its own time is the freeing of the decoded
    # payload (hundreds of dicts), which happens as check_batch returns and so lands in its caller
    Rule("decode", "receiver/verifier.py:check"),
    Rule("verifier_ipc", "multiprocessing/connection.py:*"),
    Rule("verifier_ipc", "receiver/verifier.py:_serve"),
    Rule("verifier_ipc", "receiver/verifier.py:submit"),
    Rule("verifier_ipc", "receiver/verifier.py:_redeem"),
    Rule("verifier_ipc", "receiver/verifier.py:verdict"),
    Rule("startup", "receiver/verifier.py:start"),
    Rule("screen", "receiver/screen.py:*"),
    Rule("commit", "receiver/db.py:commit"),
    Rule("commit", "receiver/pg.py:commit"),
    Rule("database", "receiver/db.py:*"),
    Rule("database", "receiver/pg.py:*"),
    Rule("ack", "wire/messages.py:seq_ack"),
    Rule("ack", "wire/messages.py:media_ack"),
    Rule("ack", "receiver/mqtt.py:publish"),
    Rule("ack", "receiver/mqtt.py:ack"),
    Rule("ack", "receiver/server.py:_publish_media_acks", "receiver/server.py:process"),
    Rule("ack", "receiver/server.py:_ask_resends", "receiver/server.py:process"),
    Rule("housekeeping", "receiver/server.py:housekeeping"),
    Rule("housekeeping", "receiver/server.py:prune"),
    Rule("key_registry", "receiver/registry.py:*"),
    Rule("chain", "receiver/writer.py:*"),
    Rule("chain", "receiver/media.py:*", "receiver/server.py:process"),
    Rule("chain", "receiver/server.py:_dispatch"),
    Rule("chain", "receiver/server.py:process"),
    Rule("chain", "receiver/server.py:_process_until_done"),
    Rule("mqtt", "receiver/server.py:_on_message"),
    Rule("mqtt", "receiver/server.py:_job"),
    Rule("mqtt", "receiver/mqtt.py:_message"),
    Rule("mqtt", "paho/mqtt/client.py:_thread_main"),
    Rule("mqtt", "paho/mqtt/client.py:loop_forever"),
    Rule("startup", "receiver/server.py:__init__"),
    Rule("startup", "receiver/cli.py:resolve"),
    Rule("startup", "logging/__init__.py:basicConfig"),
    Rule("startup", "receiver/server.py:start"),
    Rule("startup", "receiver/mqtt.py:start"),
    Rule("startup", "<frozen importlib._bootstrap*>:*"),
    Rule("startup", "receiver/server.py:stop"),  # shutdown, counted with startup: both once per process
]

# The stage of a profile's roots that no rule names, by the role in the file name. The verifier
# process's profile starts inside _serve, so its loop's own calls (pipe reads, pickling the
# verdict, the key cache) are roots: they are its IPC.
ROOT_STAGES: dict[str, str] = {"verifier": "verifier_ipc"}

Key = tuple[str, int, str]
_STDLIB = re.compile(r"^.*/lib/python3\.\d+/")


def label(key: Key) -> str:
    """'PATH:FUNCTION' for a pstats key, PATH shortened to the repo or site-packages ('~' for builtins)."""
    filename, _, name = key
    if filename == "~":
        return f"~:{name}"
    for marker in ("/site-packages/", "/dist-packages/"):
        if marker in filename:
            filename = filename.split(marker, 1)[1]
            break
    else:
        filename = _STDLIB.sub("", filename)
        root = str(Path(__file__).resolve().parent.parent) + "/"
        if filename.startswith(root):
            filename = filename[len(root):]
    return f"{filename}:{name}"


def match(rules: Iterable[Rule], callee: Key, caller: Key | None) -> str | None:
    lc = label(callee)
    lr = label(caller) if caller is not None else None
    for r in rules:
        if fnmatch.fnmatchcase(lc, r.callee) and (
            r.caller is None or (lr is not None and fnmatch.fnmatchcase(lr, r.caller))
        ):
            return r.stage
    return None


class Attribution:
    """Stage shares of one profile (one thread); seconds of thread CPU per stage.

    The share of the time inside a function that belongs to each stage, D(f), is the mix over
    its callers c (weighted by the time spent in f under c) of: the stage a rule gives the edge
    c -> f, or else D(c). Recursion (nested imports, recursive checks) makes that a system of
    equations rather than a walk, so it is solved by iteration until nothing moves.
    """

    ITERATIONS = 200

    def __init__(self, stats: pstats.Stats, rules: list[Rule] | None = None, root_stage: str = "other"):
        self.rules = RULES if rules is None else rules
        self.root_stage = root_stage
        self.table = stats.stats  # type: ignore[attr-defined]
        self.stages: dict[str, float] = {}
        # profiled calls whose own time went to each stage (same shares), of Python functions and of builtins
        self.calls: dict[str, float] = {}
        self.builtin_calls: dict[str, float] = {}
        self.unmatched: dict[str, float] = {}  # function whose own time went to "other" -> seconds
        self._matched: dict[tuple[Key, Key | None], str | None] = {}
        inside = self._solve()
        for key, (_, nc, tt, _, callers) in self.table.items():
            if tt <= 0 and nc == 0:
                continue
            weights = {c: v[2] for c, v in callers.items() if c != key}
            if sum(weights.values()) <= 0:
                weights = {c: v[3] for c, v in callers.items() if c != key}
            for stage, share in self._mix(key, weights, inside).items():
                self.stages[stage] = self.stages.get(stage, 0.0) + tt * share
                into = self.builtin_calls if key[0] == "~" else self.calls
                into[stage] = into.get(stage, 0.0) + nc * share
                if stage == "other":
                    self.unmatched[label(key)] = self.unmatched.get(label(key), 0.0) + tt * share

    def _solve(self) -> dict[Key, dict[str, float]]:
        edges = {k: {c: v[3] for c, v in e[4].items() if c != k} for k, e in self.table.items()}
        inside: dict[Key, dict[str, float]] = {k: {} for k in self.table}
        for _ in range(self.ITERATIONS):
            moved = 0.0
            for k, weights in edges.items():
                new = self._mix(k, weights, inside)
                old = inside[k]
                moved = max(moved, max((abs(new.get(s, 0.0) - old.get(s, 0.0)) for s in new.keys() | old.keys()),
                                       default=0.0))
                inside[k] = new
            if moved < 1e-9:
                break
        return inside

    def _match(self, key: Key, caller: Key | None) -> str | None:
        edge = (key, caller)
        if edge not in self._matched:
            self._matched[edge] = match(self.rules, key, caller)
        return self._matched[edge]

    def _mix(self, key: Key, weights: dict[Key, float], inside: dict[Key, dict[str, float]]) -> dict[str, float]:
        """Stage shares of key's time called with these caller weights (none: a root)."""
        if not weights:
            return {self._match(key, None) or self.root_stage: 1.0}
        total = sum(weights.values())
        out: dict[str, float] = {}
        for caller, w in weights.items():
            share = w / total if total > 0 else 1 / len(weights)
            stage = self._match(key, caller)
            if stage is not None:
                out[stage] = out.get(stage, 0.0) + share
            else:
                for s, v in inside.get(caller, {}).items():
                    out[s] = out.get(s, 0.0) + share * v
        norm = sum(out.values())
        return {s: v / norm for s, v in out.items()} if norm > 0 else {}


def total_seconds(stats: pstats.Stats) -> float:
    return float(sum(v[2] for v in stats.stats.values()))  # type: ignore[attr-defined]


def attribute_dir(directory: Path, rules: list[Rule] | None = None) -> dict[str, object]:
    """Every .prof in directory: seconds per stage (summed), per thread file, and the top "other" roots."""
    stages: dict[str, float] = dict.fromkeys(STAGES, 0.0)
    calls: dict[str, float] = dict.fromkeys(STAGES, 0.0)
    builtin_calls: dict[str, float] = dict.fromkeys(STAGES, 0.0)
    threads: dict[str, float] = {}
    by_role: dict[str, dict[str, float]] = {}
    unmatched: dict[str, float] = {}
    for path in sorted(directory.glob("*.prof")):
        stats = pstats.Stats(str(path))
        role, _, rest = path.stem.partition("-")
        a = Attribution(stats, rules, ROOT_STAGES.get(role, "other"))
        role_stages = by_role.setdefault(role, dict.fromkeys(STAGES, 0.0))
        for s, v in a.stages.items():
            stages[s] = stages.get(s, 0.0) + v
            role_stages[s] = role_stages.get(s, 0.0) + v
        for s, v in a.calls.items():
            calls[s] = calls.get(s, 0.0) + v
        for s, v in a.builtin_calls.items():
            builtin_calls[s] = builtin_calls.get(s, 0.0) + v
        for k, v in a.unmatched.items():
            unmatched[k] = unmatched.get(k, 0.0) + v
        thread = rest.partition("-")[2]
        threads[f"{role}:{thread}"] = threads.get(f"{role}:{thread}", 0.0) + total_seconds(stats)
    top = dict(sorted(unmatched.items(), key=lambda kv: -kv[1])[:15])
    return {"stages_s": stages, "by_role_s": by_role, "calls": calls, "builtin_calls": builtin_calls,
            "threads_s": threads, "other_top_s": top}
