"""This worker's heartbeat as a sender of SMS (dispatch/senders.py explains why).

A thread beats every `BEAT_S`; the rows this process claims carry its id. The gateway
asks `may_send()` before each provider call: after `LEASE_S` without a heartbeat (the
database unreachable from here), others may soon count this sender dead and resolve its
rows, so it starts no more sends. Each beat also looks at the other senders on this host
and forgets those whose process is gone: a worker restarted after a SIGKILL resolves its
predecessor's rows at once instead of after `DEAD_AFTER_S`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine

from dispatch import senders
from dispatch.domain.model import new_id
from dispatch.senders import LEASE_S, LocalClaims

log = logging.getLogger("dolbom.lease")

BEAT_S = 2.0


def host_identity() -> str:
    """Where a pid means one process: the host, its boot, and the pid namespace (two
    containers of one pod share a hostname, and each may be pid 1)."""
    parts = [socket.gethostname()]
    for read in (lambda: Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
                 lambda: os.readlink("/proc/self/ns/pid")):
        with contextlib.suppress(OSError):
            parts.append(read())
    return "|".join(parts)[:200]


def process_start(pid: int) -> int | None:
    """When a process started (clock ticks since boot), None if it is gone or a zombie, or
    if this system has no /proc. Compared with the recorded value, it tells a live process
    from a later one that reused the pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def process_alive(pid: int, started: int | None = None) -> bool:
    """Whether `pid` runs (and, given `started`, is still the process that started then).
    A zombie counts as dead: an orphan reparented to a PID 1 that does not reap lingers as
    one, and os.kill(pid, 0) would still succeed."""
    if started is not None:
        return process_start(pid) == started
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return process_start(pid) is not None if Path("/proc/self/stat").exists() else True


class SenderLease(LocalClaims):
    def __init__(self, engine: Engine, *, beat_s: float = BEAT_S,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        super().__init__(new_id())
        self.engine = engine
        self.beat_s = beat_s
        self.host = host_identity()
        self.pid = os.getpid()
        self.process_start = process_start(self.pid)
        self._clock, self._monotonic = clock, monotonic
        self._last_beat: float | None = None
        self._failing = False
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sender-lease", daemon=True)

    def start(self) -> SenderLease:
        self._thread.start()
        return self

    def may_send(self) -> bool:
        return (not self._closed.is_set() and self._last_beat is not None
                and self._monotonic() - self._last_beat < LEASE_S)

    def beat(self) -> None:
        """One heartbeat, and forget the senders of this host whose process is gone."""
        assert self.id is not None
        started = self._monotonic()  # before the write: the lease never outlives the row
        now = self._clock()
        with self.engine.begin() as conn:
            senders.beat(conn, self.id, host=self.host, pid=self.pid,
                         process_start=self.process_start, now=now)
            gone = [sender_id for sender_id, pid, start
                    in senders.same_host(conn, self.host, self.id)
                    if not process_alive(pid, start)]
            if senders.forget(conn, gone):
                log.warning("%d sender(s) on this host died; their SMS are looked up now",
                            len(gone))
            senders.forget_long_dead(conn, now)
        self._last_beat = started

    def _run(self) -> None:
        while True:
            try:
                self.beat()
                if self._failing:
                    log.info("sender heartbeat is back")
                self._failing = False
            except Exception as exc:
                if not self._failing:  # once per outage, not every beat
                    log.warning("sender heartbeat failed (%s); SMS stop %.0fs after the last",
                                type(exc).__name__, LEASE_S)
                self._failing = True
            if self._closed.wait(self.beat_s):
                return

    def close(self, *, idle: bool) -> None:
        """Stop beating. `idle`: nothing of ours is being sent, so others may resolve what
        we leave `sending` at once; otherwise they wait until our heartbeat is old."""
        self._closed.set()
        if self._thread.is_alive():
            self._thread.join(self.beat_s + 5)
        if idle:
            assert self.id is not None
            try:
                with self.engine.begin() as conn:
                    senders.forget(conn, [self.id])
            except Exception as exc:
                log.warning("could not sign this sender off (%s); it ages out instead",
                            type(exc).__name__)
