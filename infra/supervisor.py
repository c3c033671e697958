"""`dolbom up`: the whole system on one machine, stopped cleanly by Ctrl-C.

Start order: the embedded broker (unless DOLBOM_KAFKA_BOOTSTRAP names a cluster), the
database migrations, the topics, then three child processes (the worker, which also runs
the SMS notifier agents; the outbox relay; the API). DOLBOM_WORKERS=N starts N workers in
one consumer group (`worker`, `worker-2`, …), which share the topics' partitions. A child that dies is restarted;
Ctrl-C or SIGTERM stops the children first and the broker last. Children die with the
supervisor even if it is killed outright (PR_SET_PDEATHSIG), so nothing is left behind.
The end-to-end tests and benchmarks start the system through this same class.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Self

import httpx

from infra.broker import EmbeddedBroker, spawn_with_parent
from infra.retention import BrokerRecycler
from schemas.config import Settings, as_environment

RESTART_BACKOFF_MAX_S = 30.0
ROLES = ("worker", "relay", "api")


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0
    backoff: float = 1.0
    _log: IO[Any] | None = field(default=None, repr=False)

    def start(self) -> None:
        if self._log is None:
            self._log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the child
        self.process = spawn_with_parent(self.argv, self._log, env=self.env,
                                         death_signal=signal.SIGTERM)
        self.started_at = time.monotonic()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None


class LocalSystem:
    """Broker, database, topics and the three roles, as child processes of this one."""

    def __init__(self, settings: Settings, *, var: Path, host: str = "127.0.0.1",
                 port: int = 8000, extra_env: dict[str, str] | None = None,
                 roles: tuple[str, ...] = ROLES) -> None:
        self.settings = settings
        self.var = var
        self.host, self.port = host, port
        self.extra_env = extra_env or {}
        self.roles = roles
        self.broker: EmbeddedBroker | None = None
        self.children: dict[str, Child] = {}
        self.bootstrap = settings.kafka_bootstrap or ""
        self.recycler: BrokerRecycler | None = None

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> Self:
        from dispatch.domain.policy import load_policies
        from infra.db import upgrade

        # A policy file with a mistake stops us here, naming the file and the field, before
        # any process starts (each child would only crash on it, again and again).
        load_policies(self.settings.policy_dir)
        from infra.topics import ensure_topics

        self.var.mkdir(parents=True, exist_ok=True)
        if not self.bootstrap:
            self.broker = EmbeddedBroker(log_path=self.var / "broker.log").start()
            self.bootstrap = self.broker.bootstrap
            # It keeps every message in memory; see infra/retention.py.
            self.recycler = BrokerRecycler(self, self.settings.broker_max_mb)
        upgrade(self.settings.database_url)
        ensure_topics(self.bootstrap)
        env = {**os.environ, **as_environment(self.settings), **self.extra_env,
               "DOLBOM_KAFKA_BOOTSTRAP": self.bootstrap, "PYTHONUNBUFFERED": "1"}
        argv = {"worker": ["worker"], "relay": ["relay"],
                "api": ["api", "--host", self.host, "--port", str(self.port)]}
        for role in self.roles:
            self.start_role(role, argv[role], env)
            if role == "worker":
                for name in self.extra_worker_names:
                    # Same worker id, so the same consumer group: the partitions are shared.
                    # Same data dir too (it holds the data key every process needs); only
                    # Faust's local files are kept apart, by the instance name.
                    self.start_role(name, argv[role], {**env, "DOLBOM_WORKER_INSTANCE": name})
        return self

    @property
    def extra_worker_names(self) -> list[str]:
        """`worker-2` … `worker-N` next to `worker` when settings.workers is N."""
        return [f"worker-{n}" for n in range(2, self.settings.workers + 1)]

    def start_role(self, name: str, args: list[str], env: dict[str, str]) -> Child:
        child = Child(name, [sys.executable, "-m", "infra.cli", *args], env,
                      self.var / f"{name}.log")
        child.start()
        self.children[name] = child
        return child

    def wait_until_ready(self, timeout: float = 60.0) -> None:
        """The API answers /healthz (the worker joins its group on its own time)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for child in self.children.values():
                if not child.alive:
                    raise RuntimeError(f"{child.name} exited early; see {child.log_path}:\n"
                                       + child.log_path.read_text(errors="replace")[-3000:])
            if "api" not in self.children:
                return
            try:
                if httpx.get(self.api_url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"the API did not answer on {self.api_url} within {timeout}s")

    def watch(self, stop: threading.Event) -> None:
        """Restart a child that dies, with backoff, until `stop` is set."""
        while not stop.is_set():
            if self.recycler is not None:
                try:
                    self.recycler.tick()
                except Exception as exc:  # keep supervising; the next check tries again
                    print(f"broker recycle failed: {type(exc).__name__}: {exc}",
                          file=sys.stderr, flush=True)
            for child in self.children.values():
                if child.alive:
                    if time.monotonic() - child.started_at > 60:
                        child.backoff = 1.0
                    continue
                code = child.process.poll() if child.process else None
                child.restarts += 1
                print(f"{child.name} exited with {code}; restarting in {child.backoff:.0f}s "
                      f"(see {child.log_path})", file=sys.stderr, flush=True)
                if stop.wait(child.backoff):
                    return
                child.backoff = min(child.backoff * 2, RESTART_BACKOFF_MAX_S)
                child.start()
            stop.wait(0.5)

    def stop(self) -> None:
        for child in reversed(list(self.children.values())):
            child.stop()
        if self.broker is not None:
            self.broker.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_up(settings: Settings, *, host: str, port: int) -> int:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    system = LocalSystem(settings, var=Path("var"), host=host, port=port)
    try:
        print("starting broker, database and workers…", flush=True)
        system.start()
        system.wait_until_ready()
        broker = (f"embedded Tansu on {system.bootstrap} (memory only; the database is the "
                  "record)" if system.broker else system.bootstrap)
        sms = "Twilio" if settings.twilio_enabled else \
            "console gateway (no Twilio credentials): SMS are recorded in the database"
        print(f"broker    {broker}")
        print(f"database  {settings.database_url} (migrated)")
        print(f"sms       {sms}")
        print(f"workers   {settings.workers} in consumer group {settings.worker_id}")
        print(f"logs      {system.var.resolve()}/*.log")
        print(f"\n  console  http://{host}:{port}/console")
        print(f"  API      http://{host}:{port}/docs")
        print(f"  token    {_local_dispatcher_token(settings)}   (role dispatcher, made for "
              "this run)\n")
        print("Ctrl-C stops everything.", flush=True)
        system.watch(stop)
        return 0
    finally:
        print("stopping…", flush=True)
        system.stop()
        print("stopped.", flush=True)


def _local_dispatcher_token(settings: Settings) -> str:
    from dispatch import commands as c
    from dispatch.bootstrap import bootstrap
    from dispatch.db import make_engine
    from dispatch.domain.policy import load_policies

    engine = make_engine(settings.database_url)
    try:
        bus = bootstrap(engine, load_policies(settings.policy_dir))
        return str(bus.handle(c.CreateToken(name="local dispatcher", role="dispatcher")))
    finally:
        engine.dispose()
