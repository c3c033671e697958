"""Figures of a simulated day per strategy: the table, the JSON file, the plot, the advice."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from dispatch.domain.policy import ServicePolicy
from infra.simulate.engine import DayRun
from infra.simulate.optimum import Job, Worker, offline_optimum
from infra.simulate.population import Population

# DOMAIN.md §3: the 2-hour-notice pilot in Gwangju, 20 Dec 2023 – 30 Jun 2024 (News1).
PILOT_REQUESTS, PILOT_DELIVERED = 144, 77
PILOT_FILL_RATE = PILOT_DELIVERED / PILOT_REQUESTS  # 53.5 %
PILOT: dict[str, object] = {
    "requests": PILOT_REQUESTS, "delivered": PILOT_DELIVERED, "fill_rate": PILOT_FILL_RATE,
    "source": "News1, news1.kr/amp/local/gwangju-jeonnam/5551903 (DOMAIN.md §3)"}
# What a carer or parent reads because a fill happened: the offers out, the "closed" texts
# to the others, the carer's confirmation and the parent's "matched".
FILL_SMS = ("offer", "offer_rescinded", "accepted_ack", "assigned")


@dataclass(frozen=True)
class StrategyResult:
    strategy: str
    requests: int
    rejected: int
    filled: int
    fill_rate: float
    escalated: int
    median_fill_min: float | None
    p90_fill_min: float | None
    sms_per_fill: float | None       # FILL_SMS kinds only
    sms_total: int                   # every SMS sent that day, all kinds
    sms_by_kind: dict[str, int]
    offers_made: int
    mean_km: float | None
    optimum_mean_km: float | None
    optimum_method: str
    wall_s: float
    commands: int


def summarize(run: DayRun, population: Population, policy: ServicePolicy) -> StrategyResult:
    minutes = [f.seconds_to_fill / 60 for f in run.fills]
    filled = len(run.fills)
    fill_sms = sum(run.sms_by_kind.get(kind, 0) for kind in FILL_SMS)
    by_index = {r.index: r for r in population.requests}
    jobs = [Job(start=by_index[f.request_index].start, end=by_index[f.request_index].end,
                lat=by_index[f.request_index].lat, lon=by_index[f.request_index].lon,
                district=by_index[f.request_index].district,
                skills=tuple(policy.required_skills)) for f in run.fills]
    workers = [Worker(lat=c.lat, lon=c.lon, districts=c.districts, skills=c.skills)
               for c in population.carers]
    optimum = offline_optimum(jobs, workers,
                              buffer=timedelta(minutes=policy.travel_buffer_minutes))
    return StrategyResult(
        strategy=run.strategy, requests=run.requests, rejected=run.rejected, filled=filled,
        fill_rate=filled / run.requests if run.requests else 0.0, escalated=run.escalated,
        median_fill_min=_round(float(np.median(minutes))) if minutes else None,
        p90_fill_min=_round(float(np.percentile(minutes, 90))) if minutes else None,
        sms_per_fill=_round(fill_sms / filled) if filled else None,
        sms_total=sum(run.sms_by_kind.values()), sms_by_kind=run.sms_by_kind,
        offers_made=run.offers_made,
        mean_km=_round(float(np.mean([f.km for f in run.fills]))) if run.fills else None,
        optimum_mean_km=_round(optimum.mean_km), optimum_method=optimum.method,
        wall_s=round(run.wall_s, 1), commands=run.commands)


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def table(results: list[StrategyResult]) -> str:
    head = ("strategy", "requests", "filled", "fill", "median", "p90", "SMS/fill", "esc.",
            "km", "km opt.", "wall s")
    rows = [head]
    for r in results:
        rows.append((r.strategy, str(r.requests), str(r.filled), f"{r.fill_rate:.1%}",
                     _minutes(r.median_fill_min), _minutes(r.p90_fill_min),
                     _num(r.sms_per_fill), str(r.escalated), _num(r.mean_km),
                     _num(r.optimum_mean_km) + ("*" if r.optimum_method == "lower bound" else ""),
                     f"{r.wall_s:.1f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w)
                       for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _minutes(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} min"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def recommend(results: list[StrategyResult], policies: dict[str, ServicePolicy],
              service: str) -> str:
    """Which strategy to use, from these figures, in this order: fill as many requests as the
    best (within one standard error of a day's fill rate, sqrt(p(1-p)/n): a smaller gap is
    one seeded day's luck, not the strategy); fill 9 in 10 of them
    before the service's SLA sends them to a dispatcher; and among those, text carers least
    per fill (every needless offer and "closed" text teaches carers to ignore offers)."""
    if not results or all(r.filled == 0 for r in results):
        return ("No strategy filled a request in this scenario: with nobody free or willing, "
                "the order of offers cannot help. Add carers before changing the strategy.")
    sla_min = policies[service].escalate_after_s / 60
    best = max(r.fill_rate for r in results)
    requests = max(r.requests for r in results)
    margin = max(0.01, math.sqrt(best * (1 - best) / requests))
    close = [r for r in results if r.fill_rate >= best - margin]
    in_time = [r for r in close if r.p90_fill_min is not None and r.p90_fill_min <= sla_min]
    pick = min(in_time or close, key=lambda r: (r.sms_per_fill or 0.0, r.median_fill_min or 0.0))
    others = "; ".join(
        f"{r.strategy} {r.fill_rate:.1%} (median {_minutes(r.median_fill_min)}, p90 "
        f"{_minutes(r.p90_fill_min)}, {_num(r.sms_per_fill)} SMS per fill)"
        for r in results if r is not pick)
    current = {sid: p.offers.strategy for sid, p in sorted(policies.items())
               if p.mode == "visit"}
    text = (f"Use `{pick.strategy}` for {service}: it filled {pick.fill_rate:.1%} of requests "
            f"(median {_minutes(pick.median_fill_min)}, p90 {_minutes(pick.p90_fill_min)} to "
            f"fill, {_num(pick.sms_per_fill)} SMS per fill); {others}. The rule: fill within "
            f"{margin * 100:.1f} points of the best (one day's sampling error), 9 in 10 fills "
            "before the SLA "
            f"({sla_min:g} min, after which a dispatcher is woken), then the fewest texts per "
            "fill, because every needless offer and 'closed' text teaches carers to ignore "
            "offers. ")
    if not in_time:
        text += "No strategy filled 9 in 10 within the SLA here: more carers are needed. "
    text += "The built-in visit policies use: " + ", ".join(
        f"{sid} = {strategy}" for sid, strategy in current.items()) + "."
    if current.get(service) != pick.strategy:
        text += (f" The {service} policy file says `{current.get(service)}`: "
                 "a change there is the lead's call (this simulator does not edit policies).")
    return text


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, ensure_ascii=False, indent=2, default=str) + "\n",
                    encoding="utf-8")


def results_payload(results: list[StrategyResult], **extra: Any) -> dict[str, Any]:
    return {**extra, "pilot": PILOT, "strategies": [asdict(r) for r in results]}


def plot(path: Path, results: list[StrategyResult], title: str,
         sla_min: float | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.strategy for r in results]
    x = np.arange(len(results))
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(12, 4))
    ax1.bar(x, [r.fill_rate * 100 for r in results], color="#4c72b0")
    ax1.axhline(PILOT_FILL_RATE * 100, color="#c44e52", linestyle="--",
                label=f"pilot {PILOT_FILL_RATE:.1%}")
    ax1.set_ylabel("requests filled (%)")
    ax1.set_ylim(0, 100)
    ax1.legend(loc="lower right")
    median = [r.median_fill_min or 0.0 for r in results]
    p90 = [r.p90_fill_min or 0.0 for r in results]
    ax2.bar(x - 0.2, median, width=0.4, label="median", color="#55a868")
    ax2.bar(x + 0.2, p90, width=0.4, label="p90", color="#8172b2")
    if sla_min is not None:
        ax2.axhline(sla_min, color="#c44e52", linestyle="--", label=f"SLA {sla_min:g} min")
    ax2.set_ylabel("time to fill (min)")
    ax2.legend()
    ax3.bar(x, [r.sms_per_fill or 0.0 for r in results], color="#dd8452")
    ax3.set_ylabel("SMS per fill (offers, closed, confirmations)")
    for ax in (ax1, ax2, ax3):
        ax.set_xticks(x, names)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
