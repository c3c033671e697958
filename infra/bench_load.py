"""Paced load on the whole system: latency at a steady arrival rate, and the highest rate held.

    dolbom bench load --rate 10,50,200 --duration 20 --db sqlite
    dolbom bench sustained --db postgres

Each rate runs on a fresh system (as `dolbom up` runs it: embedded broker, worker, relay,
API as child processes; the real twilio client against a local stub in this process), on a
fresh SQLite file or PostgreSQL database. Requests arrive open-loop on an absolute
schedule from a thread pool (a slow answer never delays the next arrival), so the latency
counts from the *scheduled* arrival. Every carer on duty answers `YES` from a thread as
soon as their first offer of a job reaches the stub; the paths timed are

  offer:    POST /v1/requests (scheduled time)  -> the first offer SMS at the stub
  assigned: the signed YES webhook posted        -> the parent's "assigned" SMS at the stub

The same run measures the broker's one-hop floor with the system's clients
(`measure_floor`, kafka-python, same fetch wait); each path is two hops, so each p50 is also
given as a multiple of twice that floor. Also reported: the messages each request cost
(outbox rows by type, and how many went through Kafka), and the peak RSS (VmHWM) of every
process. Results are printed as a table and written as JSON under var/bench/.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from infra.bench import percentile
from infra.bench_broker import measure_floor
from infra.twilio_stub import TwilioStub

OFFER = re.compile(r"네 (\d{4})")
ASSIGNED = re.compile(r"(\d{4})번 요청에")
# Hospital care runs 08:00-20:00: one-hour jobs every two hours, so that no two jobs are
# within the 30-minute travel buffer of each other and a carer offered both can take both.
SLOTS_PER_DAY = 6


@dataclass
class Job:
    scheduled: float
    code: str | None = None
    answered_at: float | None = None
    offer_at: float | None = None
    offer_to: str | None = None
    yes_at: float | None = None
    told_at: float | None = None
    error: str | None = None


@dataclass
class Tracker:
    """What the stub saw, matched to jobs by code (the stub calls `saw` from its threads)."""

    families: set[str]
    on_offer: Any = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    by_code: dict[str, Job] = field(default_factory=dict)
    early_offers: dict[str, tuple[float, str]] = field(default_factory=dict)
    early_told: dict[str, float] = field(default_factory=dict)

    def saw(self, to: str, body: str, at: float) -> None:
        offered = OFFER.search(body)
        if offered:
            code = offered.group(1)
            with self.lock:
                job = self.by_code.get(code)
                if job is None:
                    self.early_offers.setdefault(code, (at, to))
                    return
                if job.offer_at is not None:
                    return
                job.offer_at, job.offer_to = at, to
            self.on_offer(job)
            return
        if to in self.families and "배정" in body:
            told = ASSIGNED.search(body)
            if told:
                with self.lock:
                    job = self.by_code.get(told.group(1))
                    if job is None:
                        self.early_told.setdefault(told.group(1), at)
                    elif job.told_at is None:
                        job.told_at = at

    def register(self, job: Job, code: str) -> None:
        with self.lock:
            job.code = code
            self.by_code[code] = job
            early = self.early_offers.pop(code, None)
            told = self.early_told.pop(code, None)
            if told is not None:
                job.told_at = told
        if early is not None and job.offer_at is None:
            job.offer_at, job.offer_to = early
            self.on_offer(job)


class ListeningStub(TwilioStub):
    """The Twilio stub, telling the tracker of every accepted message as it arrives."""

    def __init__(self) -> None:
        super().__init__(keep_alive=True)
        self.tracker: Tracker | None = None

    def _accept(self, form: dict[str, str], now_mono: float, now_wall: float) -> dict[str, Any]:
        resource = super()._accept(form, now_mono, now_wall)
        if self.tracker is not None:
            self.tracker.saw(form.get("To", ""), form.get("Body", ""), now_mono)
        return resource


def peak_rss_kib(pid: int) -> int | None:
    """VmHWM: the most resident memory the process ever had."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def process_pids(system: Any) -> dict[str, int]:
    """Every process of the running system, and this one (the stub and the clients)."""
    import os

    pids: dict[str, int] = {}
    local = system.system
    if local.broker is not None and local.broker.pid is not None:
        pids["broker"] = local.broker.pid
    for name, child in local.children.items():
        if child.process is not None:
            pids[name] = child.process.pid
    pids["bench (stub, clients)"] = os.getpid()
    return pids


def process_peaks(system: Any) -> dict[str, int | None]:
    return {name: peak_rss_kib(pid) for name, pid in process_pids(system).items()}


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User + system CPU each process has used so far (its threads included)."""
    import psutil

    used: dict[str, float] = {}
    for name, pid in pids.items():
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        used[name] = times.user + times.system
    return used


def cpu_per_request(before: dict[str, float], after: dict[str, float],
                    requests: int) -> dict[str, float]:
    """CPU ms each process spent per request over the paced run and its drain: the budget
    a rate has to fit into (two cores give 2,000 ms of CPU a second)."""
    per = {name: (after[name] - before[name]) * 1000 / max(1, requests)
           for name in before if name in after}
    per["all but the bench"] = sum(v for k, v in per.items() if not k.startswith("bench"))
    return per


def message_counts(database_url: str, requests: int) -> dict[str, Any]:
    """Outbox rows by type, and how many of them went through Kafka, per request submitted.

    A row settled without Kafka (a local-only event, or an `sms.requested` whose SMS the
    worker sent before the relay took it) has published_at == created_at.
    """
    from sqlalchemy import case, func, select

    from dispatch import orm
    from dispatch.db import make_engine

    o = orm.outbox.c
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(
                o.type, func.count(),
                func.sum(case((o.published_at.is_not(None)
                               & (o.published_at != o.created_at), 1), else_=0)))
                .group_by(o.type)).all()
            sms = conn.scalar(select(func.count()).select_from(orm.notifications))
    finally:
        engine.dispose()
    per = max(1, requests)
    by_type = {t: {"rows": n, "via_kafka": int(k or 0)} for t, n, k in rows}
    return {"by_type": by_type,
            "outbox_rows_per_request": sum(v["rows"] for v in by_type.values()) / per,
            "kafka_messages_per_request": sum(v["via_kafka"] for v in by_type.values()) / per,
            "sms_per_request": (sms or 0) / per}


def stage_latencies(database_url: str) -> dict[str, dict[str, float]]:
    """Where POST -> offer spends its time, from the timestamps the system itself stored:

      relay:    request stored (API)      -> its request.received on Kafka
      matching: request.received on Kafka -> offers stored (the hop and the worker's queue)
      sending:  offers stored             -> the first offer handed to the gateway
    """
    from sqlalchemy import func, select

    from dispatch import orm
    from dispatch.db import make_engine

    o, n = orm.outbox.c, orm.notifications.c
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            published = dict(conn.execute(select(o.key, o.published_at).where(
                o.type == "request.received", o.published_at.is_not(None))).all())
            stored = dict(conn.execute(select(o.key, o.created_at).where(
                o.type == "request.received")).all())
            offers = {rid: (made, sent) for rid, made, sent in conn.execute(
                select(n.request_id, func.min(n.created_at), func.min(n.sent_at))
                .where(n.kind == "offer").group_by(n.request_id)).all()}
    finally:
        engine.dispose()

    def ms(a: Any, b: Any) -> float | None:
        return (b - a).total_seconds() * 1000 if a is not None and b is not None else None

    stages: dict[str, list[float]] = {"relay": [], "matching": [], "sending": []}
    for rid, at in stored.items():
        made, sent = offers.get(rid, (None, None))
        for name, value in (("relay", ms(at, published.get(rid))),
                            ("matching", ms(published.get(rid), made)),
                            ("sending", ms(made, sent))):
            if value is not None:
                stages[name].append(value)
    return {name: {"n": len(v), "p50": percentile(v, 50), "p99": percentile(v, 99)}
            for name, v in stages.items() if v}


@contextmanager
def database_url(db: str, tmp: Path) -> Iterator[str]:
    if db == "sqlite":
        yield f"sqlite:///{tmp / 'dolbom.db'}"
    elif db == "postgres":
        from infra.harness import fresh_postgres

        with fresh_postgres(prefix="dolbom_bench_") as url:
            yield url
    else:
        raise ValueError(f"unknown database {db!r} (sqlite or postgres)")


def run_rate(rate: float, duration_s: float, db: str, *, carers: int, families: int = 20,
             fetch_wait_ms: int = 10, threads: int = 64, drain_s: float = 60.0,
             floor_messages: int = 300, workers: int = 1) -> dict[str, Any]:
    """One paced run on a fresh system; returns its figures."""
    from infra.harness import running_system

    stub = ListeningStub()
    with tempfile.TemporaryDirectory(prefix="dolbom-bench-load-") as tmp, \
            database_url(db, Path(tmp)) as url, \
            running_system(Path(tmp), database_url=url, stub=stub,
                           kafka_fetch_wait_ms=fetch_wait_ms, workers=workers,
                           # The bench measures the system, not the throttles in front of it.
                           sms_rate_per_s=100_000.0, intake_rate_per_min=10_000_000.0,
                           log_level="WARNING") as system:
        for i in range(carers):
            system.carer(f"부하{i}", f"010-7{i // 10000:03d}-{i % 10000:04d}")
        fams = [system.family(f"010-8100-{i:04d}") for i in range(families)]
        parents = {f"+82108100{i:04d}" for i in range(families)}
        pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bench")
        http = httpx.Client(base_url=system.system.api_url, timeout=30,
                            limits=httpx.Limits(max_connections=threads),
                            headers=dict(system.http.headers))

        def answer(job: Job) -> None:
            def say_yes() -> None:
                job.yes_at = time.monotonic()
                try:
                    r = system.reply(job.offer_to or "", f"YES {job.code}")
                    if r.status_code != 200:
                        job.error = f"YES answered {r.status_code}"
                except httpx.HTTPError as exc:
                    job.error = f"YES: {type(exc).__name__}"
            # After the run the pool is shut: late offers go unanswered.
            with contextlib.suppress(RuntimeError):
                pool.submit(say_yes)

        tracker = Tracker(parents, on_offer=answer)
        stub.tracker = tracker
        # Warm-up, untimed: the worker joins its consumer group in the background.
        warm = Job(time.monotonic())
        tracker.register(warm, system.request(fams[0], day_offset=900)["code"])
        deadline = time.monotonic() + 90
        while warm.told_at is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if warm.told_at is None:
            raise TimeoutError("warm-up request was never assigned")

        jobs: list[Job] = []

        def submit(i: int, job: Job) -> None:
            family = fams[i % len(fams)]
            day, hour = 1 + i // SLOTS_PER_DAY, 8 + 2 * (i % SLOTS_PER_DAY)
            try:
                from infra.harness import tomorrow_at

                start = tomorrow_at(hour, day)
                r = http.post("/v1/requests", json={
                    "service": "hospital", "family_id": family["id"],
                    "child_id": family["children"][0]["id"], "start": start.isoformat(),
                    "end": start.replace(hour=hour + 1).isoformat(),
                    "location": {"hospital": "전남대병원", "ward": "소아병동 5층"}})
                job.answered_at = time.monotonic()
                if r.status_code != 202:
                    job.error = f"POST answered {r.status_code}"
                    return
                tracker.register(job, r.json()["code"])
            except httpx.HTTPError as exc:
                job.error = f"POST: {type(exc).__name__}"

        total = int(rate * duration_s)
        pids = process_pids(system)
        cpu_before = cpu_seconds(pids)
        started = time.monotonic()
        lag: list[float] = []
        for i in range(total):
            at = started + i / rate
            delay = at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            lag.append((time.monotonic() - at) * 1000)
            job = Job(at)
            jobs.append(job)
            pool.submit(submit, i, job)
        end_deadline = time.monotonic() + drain_s
        while time.monotonic() < end_deadline and any(
                j.told_at is None and j.error is None for j in jobs):
            time.sleep(0.1)
        elapsed = time.monotonic() - started
        cpu = cpu_per_request(cpu_before, cpu_seconds(pids), total)
        stub.tracker = None  # late offers are not answered any more
        pool.shutdown(wait=False, cancel_futures=True)
        http.close()
        floor = measure_floor(system.system.bootstrap, floor_messages, fetch_wait_ms)
        peaks = process_peaks(system)
        counts = message_counts(url, total + 1)
        stages = stage_latencies(url)

    offer_ms = [(j.offer_at - j.scheduled) * 1000 for j in jobs if j.offer_at is not None]
    told_ms = [(j.told_at - j.yes_at) * 1000 for j in jobs
               if j.told_at is not None and j.yes_at is not None]
    two_hops = 2 * floor.p50
    paths = {}
    answered_ms = [(j.answered_at - j.scheduled) * 1000 for j in jobs
                   if j.answered_at is not None]
    for name, samples in (("POST -> offer SMS", offer_ms), ("YES -> parent SMS", told_ms),
                          ("POST answered", answered_ms)):
        if samples:
            p = {q: percentile(samples, q) for q in (50, 95, 99)}
            paths[name] = {"n": len(samples), "p50": p[50], "p95": p[95], "p99": p[99],
                           "max": max(samples), "x_two_hop_floor_p50": p[50] / two_hops}
        else:
            paths[name] = {"n": 0}
    errors: dict[str, int] = {}
    for j in jobs:
        if j.error:
            errors[j.error] = errors.get(j.error, 0) + 1
    return {"rate_per_s": rate, "duration_s": duration_s, "database": db,
            "submitted": total, "offered": len(offer_ms), "completed": len(told_ms),
            "errors": errors, "elapsed_s": round(elapsed, 1),
            "client_lag_ms_p99": percentile(lag, 99),
            "broker_one_hop_ms": {"p50": floor.p50, "p95": floor.p95, "p99": floor.p99,
                                  "lost": floor.lost},
            "paths": paths, "stages_ms": stages, "cpu_ms_per_request": cpu, "messages": counts, "peak_rss_kib": peaks}


def held(run: dict[str, Any], p99_limit_ms: float) -> bool:
    """The rate held: every request got its offer and its assignment, and the p99 of both
    end-to-end paths (POST -> offer, YES -> parent) stayed under the limit."""
    paths = [run["paths"]["POST -> offer SMS"], run["paths"]["YES -> parent SMS"]]
    return (not run["errors"] and run["completed"] == run["submitted"]
            and all(p.get("n", 0) == run["submitted"] and p["p99"] <= p99_limit_ms
                    for p in paths))


def write(result: dict[str, Any], out_dir: Path, name: str) -> str:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}-{result['database']}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    return str(path)


def table(result: dict[str, Any]) -> str:
    lines = [f"paced load, {result['database']}, {result['carers']} carers on duty answering "
             f"YES, {result.get('workers', 1)} worker(s), fetch wait {result['fetch_wait_ms']} ms "
             "(ms; xfloor = p50 / two broker hops)",
             "", f"{'rate/s':>7} {'path':18} {'sent':>6} {'done':>6} {'p50':>8} {'p95':>8} "
             f"{'p99':>8} {'max':>8} {'xfloor':>7} {'1 hop':>6}"]
    for run in result["runs"]:
        for name, p in run["paths"].items():
            done = p.get("n", 0)
            if not done:
                lines.append(f"{run['rate_per_s']:7g} {name:18} {run['submitted']:6d} {0:6d}")
                continue
            lines.append(f"{run['rate_per_s']:7g} {name:18} {run['submitted']:6d} {done:6d} "
                         f"{p['p50']:8.1f} {p['p95']:8.1f} {p['p99']:8.1f} {p['max']:8.1f} "
                         f"{p['x_two_hop_floor_p50']:6.1f}x {run['broker_one_hop_ms']['p50']:6.1f}")
        if run["errors"]:
            lines.append(f"        errors: {run['errors']}")
    lines.append("")
    for run in result["runs"]:
        m = run["messages"]
        kinds = ", ".join(f"{t} {v['rows'] / max(1, run['submitted'] + 1):.1f}"
                          f" ({v['via_kafka'] / max(1, run['submitted'] + 1):.1f} via Kafka)"
                          for t, v in sorted(m["by_type"].items()))
        lines.append(f"{run['rate_per_s']:g}/s messages per request: "
                     f"{m['outbox_rows_per_request']:.1f} outbox rows, "
                     f"{m['kafka_messages_per_request']:.1f} through Kafka, "
                     f"{m['sms_per_request']:.1f} SMS  [{kinds}]")
        stages = ", ".join(f"{k} {v['p50']:.1f}/{v['p99']:.1f}"
                           for k, v in run.get("stages_ms", {}).items())
        lines.append(f"{run['rate_per_s']:g}/s POST -> offer by stage (p50/p99 ms): {stages}")
        cpu = ", ".join(f"{k} {v:.1f}" for k, v in run.get("cpu_ms_per_request", {}).items())
        lines.append(f"{run['rate_per_s']:g}/s CPU ms per request: {cpu}")
        rss = ", ".join(f"{k} {v / 1024:.0f}" for k, v in run["peak_rss_kib"].items()
                        if v is not None)
        lines.append(f"{run['rate_per_s']:g}/s peak RSS (MiB): {rss}")
    if "highest_held_rate_per_s" in result:
        lines.append(f"\nhighest rate held (every request offered and assigned, p99 of POST -> "
                     f"offer and YES -> parent <= {result['p99_limit_ms']:.0f} ms): "
                     f"{result['highest_held_rate_per_s'] or 'none of the rates tried'}")
    lines.append(f"\nwritten to {result['file']}")
    return "\n".join(lines)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per rate")
    parser.add_argument("--carers", type=int, default=60, help="carers on duty")
    parser.add_argument("--fetch-wait-ms", type=int, default=10)
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes (one consumer group)")
    parser.add_argument("--out", type=Path, default=Path("var/bench"))


def _rates(text: str) -> list[float]:
    try:
        rates = [float(r) for r in text.split(",") if r.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of rates: {text!r}") from None
    if not rates or any(r <= 0 for r in rates):
        raise argparse.ArgumentTypeError("rates must be positive numbers, e.g. 10,50,200")
    return rates


def main_load(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dolbom bench load",
                                     description="latency at paced arrival rates")
    parser.add_argument("--rate", type=_rates, default=[10.0, 50.0, 200.0],
                        help="requests per second, comma-separated")
    _common(parser)
    args = parser.parse_args(argv)
    result: dict[str, Any] = {
        "at": datetime.now(UTC).isoformat(), "machine": platform.platform(), "database": args.db,
        "carers": args.carers, "fetch_wait_ms": args.fetch_wait_ms,
        "workers": args.workers, "runs": []}
    for rate in args.rate:
        result["runs"].append(run_rate(rate, args.duration, args.db, carers=args.carers,
                                       fetch_wait_ms=args.fetch_wait_ms, threads=args.threads,
                                       workers=args.workers))
    result["file"] = write(result, args.out, "load")
    print(table(result))
    return 0


def main_sustained(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dolbom bench sustained",
                                     description="the highest paced rate the system holds")
    parser.add_argument("--rates", type=_rates, default=[25.0, 50.0, 100.0, 150.0, 200.0, 300.0],
                        help="rates to step through, lowest first")
    parser.add_argument("--p99-limit-ms", type=float, default=1000.0)
    _common(parser)
    parser.set_defaults(db="postgres", duration=15.0)
    args = parser.parse_args(argv)
    result: dict[str, Any] = {
        "at": datetime.now(UTC).isoformat(), "machine": platform.platform(), "database": args.db,
        "carers": args.carers, "fetch_wait_ms": args.fetch_wait_ms, "workers": args.workers,
        "runs": [], "p99_limit_ms": args.p99_limit_ms, "highest_held_rate_per_s": None}
    for rate in sorted(args.rates):
        run = run_rate(rate, args.duration, args.db, carers=args.carers,
                       fetch_wait_ms=args.fetch_wait_ms, threads=args.threads,
                       workers=args.workers)
        result["runs"].append(run)
        if not held(run, args.p99_limit_ms):
            break
        result["highest_held_rate_per_s"] = rate
    result["file"] = write(result, args.out, "sustained")
    print(table(result))
    return 0
