"""Off by default: per-thread CPU profiles of a running receiver, for bench/bench_centre_cpu.py.

Why: the centre's CPU per record is spread over three places (paho's network thread, the
worker thread, the verifier process), and only a profile taken inside the real processes,
under a real storm, says where it goes. When COOP_RECEIVER_PROFILE names a directory, every
thread of `coop-receiver run` (and the verifier process it spawns, which inherits the
variable) runs under cProfile with time.thread_time as its clock: each thread's own CPU,
user and system, so time spent waiting for the GIL, a lock, the socket or the disk is not
counted, and neither is the CPU of other programs on a shared machine. Each thread writes
`ROLE-PID-THREAD.prof` (pstats format) when it ends. Unset, nothing here runs and nothing is
imported but os.
"""

from __future__ import annotations

import os

ENV = "COOP_RECEIVER_PROFILE"


def _target(role: str, thread_name: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in thread_name)
    return os.path.join(os.environ[ENV], f"{role}-{os.getpid()}-{safe}.prof")


def install(role: str) -> None:
    """In the receiver's main process, before any thread starts: profile this thread and every later one."""
    if not os.environ.get(ENV):
        return
    import atexit
    import cProfile
    import threading
    import time

    os.makedirs(os.environ[ENV], exist_ok=True)
    main = cProfile.Profile(time.thread_time)
    original_run = threading.Thread.run

    def profiled_run(self: threading.Thread) -> None:
        prof = cProfile.Profile(time.thread_time)
        prof.enable()
        try:
            original_run(self)
        finally:
            prof.disable()
            prof.dump_stats(_target(role, self.name))

    def dump_main() -> None:
        main.disable()
        main.dump_stats(_target(role, "main"))

    threading.Thread.run = profiled_run  # type: ignore[method-assign]
    atexit.register(dump_main)
    main.enable()


def install_child(role: str) -> None:
    """In the verifier process: profile its one thread; SIGTERM (how the parent ends it) writes the profile first."""
    if not os.environ.get(ENV):
        return
    import cProfile
    import signal
    import time
    from types import FrameType

    prof = cProfile.Profile(time.thread_time)

    def dump(signum: int = 0, frame: FrameType | None = None) -> None:
        prof.disable()
        prof.dump_stats(_target(role, "main"))
        if signum:
            os._exit(0)

    signal.signal(signal.SIGTERM, dump)
    import atexit

    atexit.register(dump)
    prof.enable()
