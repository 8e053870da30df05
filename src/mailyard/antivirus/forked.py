"""Run a piece of the database load in a forked child process and take its result back.

Theory of operation: a large database loads on the clamd listener's (and `mailyard scan`'s)
critical path, on a machine with more than one core, in a process that is pure Python for
the `.ndb` lines and numpy for the hash files; threads overlap only numpy's GIL-free
passes. So `load_database` forks: a child (which has the file bytes already, copy-on-write)
loads the hash files or the second half of a large `.ndb` file, and sends its result back
through a pipe as one pickle (protocol 5: the hash tables' arrays travel as raw bytes, the
`.ndb` rows as plain tuples), while the parent loads the rest. The parent waits for the
child (`result()`), which also reaps it.

Forking is safe here only while this process has no other thread (a fork copies one
thread, and locks another holds would stay held in the child); `can_fork()` says so, and
callers then load serially. A child that fails in any way — an exception, a signal, a
short pipe — yields `None`, and the caller loads that piece itself: the result is the same,
only slower. The child never returns into the caller's code: it leaves with `os._exit`.
"""

from __future__ import annotations

import os
import pickle
import struct
import sys
import threading

_HEADER = struct.Struct("<Q")


def can_fork() -> bool:
    """Whether a fork is safe and useful now: Linux-like, one thread, and a core to spare
    (the 1-minute load average at least one under the CPU count). On a machine whose cores
    are all busy a child only adds its cost (a fork, the pickle, copied pages): measured
    slower there than loading in one process (bench/RESULTS.md)."""
    if not (hasattr(os, "fork") and sys.platform.startswith("linux")
            and threading.active_count() == 1):
        return False
    try:
        return os.getloadavg()[0] + 1 <= (os.cpu_count() or 1)
    except OSError:
        return False


class Forked:
    """`Forked(function, *args)` runs `function(*args)` in a forked child at once;
    `result()` returns its (picklable) return value, or None if the child failed."""

    def __init__(self, function, *args):
        read_fd, write_fd = os.pipe()
        try:
            import fcntl

            fcntl.fcntl(write_fd, 1031, 1 << 20)  # F_SETPIPE_SZ: fewer round trips
        except (ImportError, OSError):
            pass
        try:
            pid = os.fork()
        except OSError:  # no process to spare: `result()` says None, the caller loads it
            os.close(read_fd)
            os.close(write_fd)
            self._pid = None
            return
        if pid == 0:  # the child
            status = 1
            try:
                os.close(read_fd)
                payload = pickle.dumps(function(*args), protocol=5)
                with os.fdopen(write_fd, "wb") as out:
                    out.write(_HEADER.pack(len(payload)))
                    out.write(payload)
                status = 0
            except BaseException:  # noqa: BLE001 - the parent loads it itself
                pass
            finally:
                os._exit(status)
        os.close(write_fd)
        self._pid = pid
        self._read_fd = read_fd

    def result(self):
        if self._pid is None:
            return None
        try:
            with os.fdopen(self._read_fd, "rb") as pipe:
                header = pipe.read(_HEADER.size)
                payload = None
                if len(header) == _HEADER.size:
                    size = _HEADER.unpack(header)[0]
                    payload = bytearray(size)
                    view, got = memoryview(payload), 0
                    while got < size:
                        n = pipe.readinto(view[got:])
                        if not n:
                            payload = None
                            break
                        got += n
        finally:
            _, status = os.waitpid(self._pid, 0)
        if payload is None or status != 0:
            return None
        return pickle.loads(payload)
