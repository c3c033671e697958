"""End-to-end latency of the hospital path on this machine, against the broker floor.

    ./dev bench                      # 50 requests, SQLite, fetch wait 10 ms (= bench latency)
    ./dev bench --requests 50 --fetch-wait-ms 1500   # Faust's built-in wait, for contrast

Starts the real system (embedded broker, worker, relay, API, all as child processes, as
`dolbom up` does) with the real twilio client pointed at a local Twilio-compatible stub,
then, one request at a time:
  offer:    POST /v1/requests           → the first offer SMS reaches the stub
  assigned: signed YES webhook (carer)  → the parent's "assigned" SMS reaches the stub
Both clocks are this process's monotonic clock (the stub runs in this process). Each
path is two Kafka hops (API → relay → worker → relay → notifier), so it is compared with
twice the one-hop floor measured on the same broker with the same fetch wait.
Results are printed as a table and written as JSON under var/bench/. The per-sender SMS
rate limit is raised to 100/s (--sms-rate) so the run measures the system, not the throttle.

Under load, and at scale: `dolbom bench load`, `dolbom bench sustained`
(infra/bench_load.py), `dolbom bench matching` (infra/bench_matching.py) and
`dolbom bench handlers` (infra/bench_handlers.py).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from infra.bench_broker import measure_floor


def percentile(samples: list[float], q: float) -> float:
    if not samples:
        return math.nan
    ordered = sorted(samples)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def _offer_of(code: str) -> Callable[[dict[str, Any]], bool]:
    return lambda m: f"네 {code}" in m["body"]


def _assigned_for(phone: str, code: str) -> Callable[[dict[str, Any]], bool]:
    return lambda m: m["to"] == phone and code in m["body"] and "배정" in m["body"]


def run(requests: int, fetch_wait_ms: int, out_dir: Path,
        sms_rate: float = 100.0) -> dict[str, Any]:
    from infra.harness import running_system

    offer_ms: list[float] = []
    assigned_ms: list[float] = []
    with tempfile.TemporaryDirectory(prefix="dolbom-bench-") as tmp, \
            running_system(Path(tmp), kafka_fetch_wait_ms=fetch_wait_ms,
                           sms_rate_per_s=sms_rate) as system:
        for i in range(5):
            system.carer(f"벤치{i}", f"010-6000-{i:04d}")
        family = system.family("010-6100-0001")
        # Warm-up: the worker joins its consumer group in the background; don't time that.
        warm = system.request(family, day_offset=requests + 5)
        system.stub.wait_for(_offer_of(warm["code"]), timeout=60)
        for i in range(requests):
            started = time.monotonic()
            created = system.request(family, day_offset=i + 1)
            code = created["code"]
            # The first of the wave's offers to reach the stub; that carer says YES (with
            # offers in waves, not every carer is asked).
            offer = system.stub.wait_for(_offer_of(code), timeout=30)
            offer_ms.append((offer["received_at"] - started) * 1000)

            started = time.monotonic()
            assert system.reply(offer["to"], f"YES {code}").status_code == 200
            told = system.stub.wait_for(_assigned_for("+821061000001", code), timeout=30)
            assigned_ms.append((told["received_at"] - started) * 1000)
        floor = measure_floor(system.system.bootstrap, 300, fetch_wait_ms)

    floor_p50 = floor.percentile(50)
    result: dict[str, Any] = {
        "at": datetime.now(UTC).isoformat(), "machine": platform.platform(),
        "database": "sqlite", "requests": requests, "fetch_wait_ms": fetch_wait_ms,
        "sms_rate_per_s": sms_rate,
        "broker_one_hop_ms": {"p50": floor_p50, "p95": floor.percentile(95),
                              "p99": floor.percentile(99)},
        "paths": {},
    }
    for name, samples in (("POST /v1/requests -> offer SMS", offer_ms),
                          ("signed YES -> parent SMS", assigned_ms)):
        p = {q: percentile(samples, q) for q in (50, 95, 99)}
        result["paths"][name] = {"p50": p[50], "p95": p[95], "p99": p[99],
                                 "max": max(samples), "x_two_hop_floor_p50": p[50] / (2 * floor_p50)}
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"e2e-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-fw{fetch_wait_ms}.json"
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    result["file"] = str(path)
    return result


def table(result: dict[str, Any]) -> str:
    floor = result["broker_one_hop_ms"]
    lines = [f"{result['requests']} requests, SQLite, consumer fetch wait "
             f"{result['fetch_wait_ms']} ms",
             f"broker one hop (kafka-python): p50 {floor['p50']:.1f} ms, p95 {floor['p95']:.1f},"
             f" p99 {floor['p99']:.1f}", "",
             f"{'path':34} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8} {'p50/2 hops':>11}"]
    for name, p in result["paths"].items():
        lines.append(f"{name:34} {p['p50']:8.1f} {p['p95']:8.1f} {p['p99']:8.1f} "
                     f"{p['max']:8.1f} {p['x_two_hop_floor_p50']:10.1f}x")
    lines.append(f"\n(ms) written to {result['file']}")
    return "\n".join(lines)


SUBCOMMANDS = {
    "latency": "one request at a time (the default, as above)",
    "load": "paced arrivals at given rates: latency, messages per request, peak RSS",
    "sustained": "step the paced rate up until p99 POST -> offer passes 1 s",
    "matching": "candidate search with 30,000 carers and 1,000 open requests, in-process",
    "handlers": "each step of one request's database work, in-process, one at a time",
    "list": "GET /v1/requests over 200 requests: milliseconds and database queries",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(argv or [])
    if argv[:1] == ["load"]:
        from infra.bench_load import main_load

        return main_load(argv[1:])
    if argv[:1] == ["sustained"]:
        from infra.bench_load import main_sustained

        return main_sustained(argv[1:])
    if argv[:1] == ["matching"]:
        from infra.bench_matching import main as matching_main

        return matching_main(argv[1:])
    if argv[:1] == ["handlers"]:
        from infra.bench_handlers import main as handlers_main

        return handlers_main(argv[1:])
    if argv[:1] == ["list"]:
        from infra.bench_list import main as list_main

        return list_main(argv[1:])
    if argv[:1] == ["latency"]:
        argv = argv[1:]
    parser = argparse.ArgumentParser(
        prog="dolbom bench", description=__doc__.split("\n\n")[0],
        epilog="other benchmarks: " + "; ".join(f"dolbom bench {name}: {what}"
                                               for name, what in SUBCOMMANDS.items()))
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--fetch-wait-ms", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("var/bench"))
    # Each request costs 8 SMS; at the production default of 1/s per sender the run would
    # measure the throttle, not the system, so the benchmark lifts it unless told otherwise.
    parser.add_argument("--sms-rate", type=float, default=100.0)
    args = parser.parse_args(argv)
    print(table(run(args.requests, args.fetch_wait_ms, args.out, args.sms_rate)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
