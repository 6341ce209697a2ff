"""Run a command under the unit's SystemCallFilter and MemoryDenyWriteExecute, without systemd.

There is no systemd PID 1 in the test sandbox, so `systemd-run -p ...` cannot apply the
unit's sandbox. This module does the part that can break the agent at run time the way
systemd does it, with the same kernel mechanism (seccomp via libseccomp, loaded through
ctypes because python3-seccomp is not in the venv):

* the allow list is the unit's SystemCallFilter= lines, expanded with
  `systemd-analyze syscall-filter` (so the groups are the installed systemd's own) and
  combined as systemd documents: the first line decides allow- or deny-list, later
  `~` lines remove calls, later plain lines add them back;
* a forbidden call fails with the unit's SystemCallErrorNumber (EPERM) or, with
  --trap, raises SIGSYS, so a test can see any forbidden call, tolerated or not;
* MemoryDenyWriteExecute is a second filter with the same rules as systemd 252's
  seccomp implementation: mmap with PROT_WRITE|PROT_EXEC, mprotect/pkey_mprotect adding
  PROT_EXEC and shmat with SHM_EXEC fail with EPERM;
* only native-architecture calls are allowed (SystemCallArchitectures=native), as
  libseccomp's default "bad architecture" action kills;
* the unit's UMask= is set, so files are created with the modes the service gets;
* with --writable PATH (repeatable), ProtectSystem=strict: in a private mount namespace
  the whole tree is read-only except those paths (the StateDirectory and a temp folder);
  /proc, /sys and /dev are separate mounts and stay as they are.

Usage: python -m tests.ops.sandbox UNIT_FILE [--trap] [--drop CALL] [--allow CALL] [--writable PATH]
       -- COMMAND ARGS...
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import functools
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "coopagent.service"
# Calls the unit refuses that the workloads are known to do without (see test_sandbox.py);
# "strict" mode allows them so that any *other* refused call kills the process (SIGSYS).
TOLERATED = ["mbind", "set_mempolicy", "fchown"]
MODES: dict[str, list[str]] = {
    "unit": [],
    "strict": ["--trap", *(a for c in TOLERATED for a in ("--allow", c))],
}

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_TRAP = 0x00030000
SCMP_CMP_MASKED_EQ = 7
PROT_WRITE, PROT_EXEC, SHM_EXEC = 0x2, 0x4, 0o100000


def scmp_act_errno(err: int) -> int:
    return 0x00050000 | (err & 0xFFFF)


class ArgCmp(ctypes.Structure):
    """struct scmp_arg_cmp from <seccomp.h>."""

    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


@functools.cache
def expand_group(name: str) -> frozenset[str]:
    """All system call names in a systemd group, nested groups included."""
    out = subprocess.run(["systemd-analyze", "syscall-filter", "--no-pager", name],
                         check=True, capture_output=True, text=True).stdout
    calls: set[str] = set()
    for line in out.splitlines()[1:]:
        item = line.strip()
        if not item or item.startswith("#"):
            continue
        calls |= expand_group(item) if item.startswith("@") else {item}
    return frozenset(calls)


def _expand(items: list[str]) -> set[str]:
    calls: set[str] = set()
    for item in items:
        calls |= expand_group(item) if item.startswith("@") else {item}
    return calls


def unit_allow_list(unit: Path) -> set[str]:
    """The system calls the unit allows, combined the way systemd.exec(5) describes."""
    lines = re.findall(r"^SystemCallFilter=(.*)$", unit.read_text(), flags=re.MULTILINE)
    if not lines or lines[0].startswith("~"):
        raise ValueError(f"{unit}: expected an allow list as the first SystemCallFilter= line")
    allowed: set[str] = set()
    for value in lines:
        deny = value.startswith("~")
        names = _expand(value.removeprefix("~").split())
        allowed = allowed - names if deny else allowed | names
    return allowed


def unit_error_number(unit: Path) -> int:
    m = re.search(r"^SystemCallErrorNumber=(\w+)$", unit.read_text(), flags=re.MULTILINE)
    return int(getattr(errno, m.group(1))) if m else 0


def _lib() -> ctypes.CDLL:
    lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.POINTER(ArgCmp)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    return lib


def _load(lib: ctypes.CDLL, ctx: int) -> None:
    rc = lib.seccomp_load(ctx)
    lib.seccomp_release(ctx)
    if rc != 0:
        raise OSError(-rc, "seccomp_load failed")


def apply_filters(allowed: set[str], denied_action: int, mdwe: bool) -> None:
    """Load the MDWE filter and the allow-list filter into this process; inherited by exec.
    MDWE goes first: the allow list forbids seccomp(2) itself, as it should."""
    lib = _lib()
    if mdwe:
        ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
        eperm = scmp_act_errno(errno.EPERM)
        rules = [("mmap", 2, PROT_WRITE | PROT_EXEC), ("mprotect", 2, PROT_EXEC),
                 ("pkey_mprotect", 2, PROT_EXEC), ("shmat", 2, SHM_EXEC)]
        for name, arg, mask in rules:
            cmp = ArgCmp(arg, SCMP_CMP_MASKED_EQ, mask, mask)
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if lib.seccomp_rule_add_array(ctx, eperm, nr, 1, ctypes.byref(cmp)) != 0:
                raise OSError(f"seccomp rule for {name} refused")
        _load(lib, ctx)
    ctx = lib.seccomp_init(denied_action)
    for name in sorted(allowed):
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr < 0:  # not a call on this architecture (e.g. mmap2 on x86_64)
            continue
        lib.seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, nr, 0, None)
    _load(lib, ctx)


CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 0x1, 0x20, 0x1000, 0x4000, 0x40000


def protect_system(writable: list[Path]) -> None:
    """ProtectSystem=strict with ReadWritePaths=writable, for this process and its children."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]

    def check(rc: int, what: str) -> None:
        if rc != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")

    check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
    for path in writable:
        p = str(path.resolve()).encode()
        check(libc.mount(p, p, None, MS_BIND, None), f"bind {path}")
    check(libc.mount(None, b"/", None, MS_REMOUNT | MS_BIND | MS_RDONLY, None), "remount / read-only")


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("unit", type=Path)
    p.add_argument("--trap", action="store_true", help="SIGSYS on a forbidden call instead of the errno")
    p.add_argument("--drop", action="append", default=[], help="also forbid this call")
    p.add_argument("--allow", action="append", default=[], help="also allow this call")
    p.add_argument("--writable", action="append", default=[], type=Path,
                   help="ProtectSystem=strict: everything else becomes read-only")
    if "--" not in argv:
        p.error("separate the command with --")
    split = argv.index("--")
    a, command = p.parse_args(argv[:split]), argv[split + 1:]
    unit_text = a.unit.read_text()
    allowed = (unit_allow_list(a.unit) | set(a.allow)) - set(a.drop)
    action = SCMP_ACT_TRAP if a.trap else scmp_act_errno(unit_error_number(a.unit))
    mdwe = re.search(r"^MemoryDenyWriteExecute=yes$", unit_text, flags=re.MULTILINE) is not None
    umask = re.search(r"^UMask=([0-7]+)$", unit_text, flags=re.MULTILINE)
    if umask:
        os.umask(int(umask.group(1), 8))
    if a.writable:
        protect_system(a.writable)
    apply_filters(allowed, action, mdwe)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
