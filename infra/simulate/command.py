"""`dolbom simulate`: compare offer strategies on one seeded synthetic day (issue 7).

    dolbom simulate --seed 1 --carers 42 --requests 200 [--strategies broadcast,waves,sequential]
                    [--out var/simulate] [--calibrate]

Prints a table per strategy and a recommendation; writes `<out>/simulate-seed<N>.json` and
`.png`. `--calibrate` first searches the carers' mean YES probability at which `sequential`
(one carer asked at a time, like a coordinator on the phone) fills the pilot's 53.5 %, then
compares every strategy at that same carer-to-request ratio and behaviour.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from dispatch.domain.policy import ServicePolicy, load_policies
from infra.simulate.engine import DayRun, simulate_day
from infra.simulate.population import Population, Scenario, build_population
from infra.simulate.report import (
    PILOT_DELIVERED,
    PILOT_FILL_RATE,
    PILOT_REQUESTS,
    StrategyResult,
    plot,
    recommend,
    results_payload,
    summarize,
    table,
    write_json,
)

STRATEGIES = ("broadcast", "waves", "sequential")
BASELINE = "sequential"


def run_strategies(population: Population, policies: dict[str, ServicePolicy],
                   strategies: list[str], *, wave_size: int | None = None,
                   sms_rate_per_s: float = 1.0, sweep_interval_s: float = 1.0,
                   jobs: int = 1) -> list[StrategyResult]:
    """Each strategy on the same day (same city, same requests, same carers' answers)."""
    kwargs: dict[str, Any] = {"wave_size": wave_size, "sms_rate_per_s": sms_rate_per_s,
                              "sweep_interval_s": sweep_interval_s}
    policy = policies[population.scenario.service]
    if jobs > 1 and len(strategies) > 1:
        with ProcessPoolExecutor(max_workers=min(jobs, len(strategies))) as pool:
            runs = list(pool.map(_one, [(population, policies, s, kwargs) for s in strategies]))
    else:
        runs = [simulate_day(population, policies, s, **kwargs) for s in strategies]
    return [summarize(run, population, policy) for run in runs]


def _one(args: tuple[Population, dict[str, ServicePolicy], str, dict[str, Any]]) -> DayRun:
    """One strategy's day in a worker process (module level, so it pickles)."""
    population, policies, strategy, kwargs = args
    return simulate_day(population, policies, strategy, **kwargs)


def calibrate(scenario: Scenario, policies: dict[str, ServicePolicy], *,
              target: float = PILOT_FILL_RATE, steps: int = 5,
              progress: Callable[[str], None] = lambda _: None,
              **kwargs: Any) -> tuple[Scenario, list[dict[str, float]]]:
    """The mean YES probability at which the baseline fills `target` of requests (bisection;
    fill rate rises with it). Returns the calibrated scenario and every step tried."""
    low, high = 0.0, 1.0
    tried: list[dict[str, float]] = []
    best: tuple[float, Scenario] | None = None
    for _ in range(steps):
        accept = round((low + high) / 2, 4)
        trial = replace(scenario, accept=accept)
        population = build_population(trial, policies[trial.service])
        [result] = run_strategies(population, policies, [BASELINE], **kwargs)
        tried.append({"accept": accept, "fill_rate": round(result.fill_rate, 4)})
        progress(f"  calibration: accept={accept:.3f} -> {BASELINE} fills {result.fill_rate:.1%}")
        if best is None or abs(result.fill_rate - target) < best[0]:
            best = (abs(result.fill_rate - target), trial)
        if result.fill_rate < target:
            low = accept
        else:
            high = accept
    assert best is not None
    return best[1], tried


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dolbom simulate",
                                description="compare offer strategies on a synthetic day")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--carers", type=int, default=Scenario.carers)
    p.add_argument("--requests", type=int, default=Scenario.requests)
    p.add_argument("--strategies", default=",".join(STRATEGIES),
                   help="comma-separated, from: " + ", ".join(STRATEGIES))
    p.add_argument("--service", default="home-emergency",
                   help="a visit-mode service whose policy is replayed (default home-emergency, "
                        "the national 2-hour-notice 긴급 service of the pilot)")
    p.add_argument("--accept", type=float, default=Scenario.accept,
                   help="carers' mean probability of YES when they answer")
    p.add_argument("--respond", type=float, default=Scenario.respond,
                   help="carers' mean probability of answering an offer at all")
    p.add_argument("--wave-size", type=int, default=None, help="override the policy's")
    p.add_argument("--sms-rate", type=float, default=None,
                   help="SMS a second from the sender (default DOLBOM_SMS_RATE_PER_S, 1)")
    p.add_argument("--calibrate", action="store_true",
                   help="first fit --accept so that sequential fills the pilot's 53.5%%")
    p.add_argument("--jobs", type=int, default=1,
                   help="run strategies in this many processes (default 1: a shared machine)")
    p.add_argument("--out", type=Path, default=Path("var/simulate"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown or not strategies:
        print(f"unknown strategy {', '.join(unknown) or '(none)'}; "
              f"choose from {', '.join(STRATEGIES)}", file=sys.stderr)
        return 2
    from schemas.config import get_settings

    try:
        settings = get_settings()
        policies = load_policies(settings.policy_dir)
    except Exception as exc:  # a bad environment variable or policy file: say which
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    _quiet_logging()
    if args.service not in policies or policies[args.service].mode != "visit":
        visit = sorted(s for s, p in policies.items() if p.mode == "visit")
        print(f"--service must be a visit-mode service: {', '.join(visit)}", file=sys.stderr)
        return 2
    if args.wave_size is not None and args.wave_size < 1:
        print("--wave-size must be at least 1", file=sys.stderr)
        return 2
    try:
        scenario = Scenario(seed=args.seed, carers=args.carers, requests=args.requests,
                            service=args.service, accept=args.accept, respond=args.respond)
    except ValueError as exc:
        print(f"bad scenario: {exc}", file=sys.stderr)
        return 2
    sms_rate = args.sms_rate if args.sms_rate is not None else settings.sms_rate_per_s
    if sms_rate <= 0:
        print("--sms-rate must be positive", file=sys.stderr)
        return 2
    kwargs: dict[str, Any] = {"wave_size": args.wave_size, "sms_rate_per_s": sms_rate,
                              "sweep_interval_s": settings.sweep_interval_s}
    calibration = None
    if args.calibrate:
        print(f"calibrating: carers' mean YES probability for {BASELINE} to fill "
              f"{PILOT_FILL_RATE:.1%} (the pilot) with {scenario.carers} carers for "
              f"{scenario.requests} requests")
        scenario, tried = calibrate(scenario, policies, progress=print, **kwargs)
        calibration = {"baseline": BASELINE, "target_fill_rate": PILOT_FILL_RATE,
                       "fitted": "accept", "accept": scenario.accept, "steps": tried}
    population = build_population(scenario, policies[scenario.service])
    results = run_strategies(population, policies, strategies, jobs=args.jobs, **kwargs)
    ratio = scenario.carers / scenario.requests if scenario.requests else None
    print(f"\n{scenario.service}, seed {scenario.seed}: {scenario.carers} carers, "
          f"{scenario.requests} requests (carer-to-request ratio {ratio or 0:.2f}), "
          f"carers answer {scenario.respond:.0%} of offers and say YES to "
          f"{scenario.accept:.1%} of those (means), SMS sender {sms_rate:g}/s")
    print(table(results))
    if any(r.optimum_method == "lower bound" for r in results):
        print("* the exact optimum was not found in time: a lower bound is shown")
    print(f"pilot (2-hour notice, Gwangju, DOMAIN.md §3): {PILOT_DELIVERED} of "
          f"{PILOT_REQUESTS} filled = {PILOT_FILL_RATE:.1%}")
    advice = recommend(results, policies, scenario.service)
    print("\n" + advice)
    stem = args.out / f"simulate-seed{scenario.seed}"
    write_json(stem.with_suffix(".json"), results_payload(
        results, scenario={**asdict(scenario), "carer_to_request_ratio": ratio},
        settings={"sms_rate_per_s": sms_rate, "sweep_interval_s": settings.sweep_interval_s,
                  "wave_size": args.wave_size
                  or policies[scenario.service].offers.wave_size,
                  "offer_timeout_s": policies[scenario.service].offers.timeout_s,
                  "escalate_after_s": policies[scenario.service].escalate_after_s},
        calibration=calibration, recommendation=advice))
    plot(stem.with_suffix(".png"), results,
         f"{scenario.service}: {scenario.carers} carers, {scenario.requests} requests, "
         f"seed {scenario.seed}", sla_min=policies[scenario.service].escalate_after_s / 60)
    print(f"\nwrote {stem.with_suffix('.json')} and {stem.with_suffix('.png')}")
    return 0


def _quiet_logging() -> None:
    """Handlers log every SMS at INFO; a simulated day would print thousands of lines.
    Warnings still show, through the project's masking setup (phone numbers masked)."""
    from infra.logging_setup import configure

    configure("WARNING", "text")
    logging.getLogger("alembic").setLevel(logging.WARNING)
