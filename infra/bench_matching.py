"""Matching cost at the national scale: 30,000 carers, 1,000 open requests, in-process.

    dolbom bench matching --carers 30000 --requests 1000 --db sqlite,postgres

Seeds a fresh database (a SQLite file in a temporary folder, and/or a fresh PostgreSQL
database) with carers spread over Gwangju's five districts (home coordinates, skills,
ratings, about 70% on duty) and open hospital-care requests at points across the city, then
times, for each request, what the engine does to pick its first wave: `find_candidates`
(as `offer_next` calls it) plus the offer strategy's choice. Each request is timed in its
own unit of work, as the worker runs it. Reported in µs per request (p50, p95, p99, mean),
next to the brute force (rank every carer on duty) on a sample of the requests.

The carers' home coordinates are indexed (migration 0005); `--without-index` drops that
index for a second pass, to show what it buys.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert, text

from infra.bench import percentile

# District centres (approximate) and how far homes spread around them, in degrees.
DISTRICT_CENTRES = {
    "동구": (35.146, 126.923), "서구": (35.152, 126.890), "남구": (35.133, 126.902),
    "북구": (35.174, 126.912), "광산구": (35.139, 126.794),
}
SPREAD_DEG = 0.025
DROP_INDEX = "DROP INDEX ix_carers_home"


def seed(engine: Engine, carers: int, requests: int, rng: random.Random) -> list[str]:
    """Carers and open requests; returns the request ids."""
    from dispatch import orm

    now = datetime.now(UTC)
    districts = list(DISTRICT_CENTRES)
    rows = []
    for i in range(carers):
        home = rng.choice(districts)
        lat, lon = DISTRICT_CENTRES[home]
        served = {home} | ({rng.choice(districts)} if rng.random() < 0.3 else set())
        skills = [s for s, p in (("hospital", 0.5), ("infant", 0.4), ("special_needs", 0.1))
                  if rng.random() < p]
        rows.append({"id": f"c{i:07d}", "name": f"돌봄{i}", "phone": f"+8210{i:08d}",
                     "districts": sorted(served), "skills": skills,
                     "home_lat": rng.gauss(lat, SPREAD_DEG), "home_lon": rng.gauss(lon, SPREAD_DEG),
                     "lang": "ko", "on_duty": rng.random() < 0.7, "opted_out": rng.random() < 0.01,
                     "rating": round(rng.uniform(3.0, 5.0), 1), "created_at": now})
    families, children, reqs = [], [], []
    start = datetime.combine(date.today() + timedelta(days=1), datetime.min.time(), UTC) \
        + timedelta(hours=1)
    for i in range(requests):
        district = rng.choice(districts)
        lat, lon = DISTRICT_CENTRES[district]
        families.append({"id": f"f{i:07d}", "guardian_name": "보호자", "guardian_phone":
                         f"+8219{i:08d}", "district": district, "pickup_guardians": [],
                         "consent_child_data": True, "consent_health_data": True, "lang": "ko"})
        children.append({"id": f"k{i:07d}", "family_id": f"f{i:07d}", "name": "아이",
                         "birth_date": date(2020, 1, 1), "disability": False})
        reqs.append({"id": f"r{i:07d}", "code": f"{i % 10000:04d}", "open_code": f"{i:04d}",
                     "service": "hospital", "family_id": f"f{i:07d}", "child_id": f"k{i:07d}",
                     "start": start + timedelta(minutes=i), "end": start + timedelta(minutes=i + 180),
                     "location": {"hospital": "병원", "ward": "5층", "district": district,
                                  "lat": rng.gauss(lat, SPREAD_DEG),
                                  "lon": rng.gauss(lon, SPREAD_DEG)},
                     "status": "matching", "created_at": now, "updated_at": now,
                     "channel": "api"})
    with engine.begin() as conn:
        for table, batch in ((orm.carers, rows), (orm.families, families),
                             (orm.children, children), (orm.requests, reqs)):
            for k in range(0, len(batch), 2000):
                conn.execute(insert(table), batch[k:k + 2000])
    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    return [str(r["id"]) for r in reqs]


def time_matching(engine: Engine, request_ids: list[str], *, brute: bool = False
                  ) -> tuple[list[float], float]:
    """µs per request for candidate search + strategy choice; and mean candidates returned."""
    from dispatch.domain.policy import load_policies
    from dispatch.domain.strategies import next_offers
    from dispatch.handlers.matching import _enough_for, find_candidates
    from dispatch.unit_of_work import UnitOfWork, session_factory

    policy = load_policies()["hospital"]
    sessions = session_factory(engine)
    now = datetime.now(UTC)
    enough = None if brute else _enough_for(policy.offers)
    samples: list[float] = []
    returned = 0
    for request_id in request_ids:
        with UnitOfWork(sessions) as uow:
            request = uow.requests.get(request_id)
            assert request is not None
            started = time.perf_counter()
            candidates = find_candidates(uow, request, policy, now, enough=enough)
            chosen = next_offers(policy.offers, [], [c.carer.id for c in candidates])
            samples.append((time.perf_counter() - started) * 1e6)
            assert chosen or not candidates
            returned += len(candidates)
    return samples, returned / max(1, len(request_ids))


def _stats(samples: list[float]) -> dict[str, float]:
    return {"n": len(samples), "p50": percentile(samples, 50), "p95": percentile(samples, 95),
            "p99": percentile(samples, 99), "mean": sum(samples) / len(samples)}


@contextmanager
def _database(kind: str, tmp: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp / 'matching.db'}"
    elif kind == "postgres":
        from infra.harness import fresh_postgres

        with fresh_postgres(prefix="dolbom_bench_") as url:
            yield url
    else:
        raise ValueError(f"unknown database {kind!r} (sqlite or postgres)")


def run(carers: int, requests: int, databases: list[str], out_dir: Path, *,
        brute_sample: int = 50, without_index: bool = False, seed_value: int = 7) -> dict[str, Any]:
    from dispatch.db import make_engine
    from infra.db import upgrade

    result: dict[str, Any] = {"at": datetime.now(UTC).isoformat(),
                              "machine": platform.platform(), "carers": carers,
                              "requests": requests, "databases": {}}
    for kind in databases:
        with tempfile.TemporaryDirectory(prefix="dolbom-bench-matching-") as tmp, \
                _database(kind, Path(tmp)) as url:
            upgrade(url)
            engine = make_engine(url)
            try:
                started = time.monotonic()
                ids = seed(engine, carers, requests, random.Random(seed_value))
                seeded_s = time.monotonic() - started
                time_matching(engine, ids[:20])  # warm caches and the mappers
                indexed, returned = time_matching(engine, ids)
                sample = ids[:brute_sample]
                brute, brute_returned = time_matching(engine, sample, brute=True)
                entry: dict[str, Any] = {
                    "seed_s": round(seeded_s, 1),
                    "indexed_us": _stats(indexed), "indexed_candidates_mean": returned,
                    "brute_force_us": _stats(brute),
                    "brute_force_candidates_mean": brute_returned}
                if without_index:
                    with engine.begin() as conn:
                        conn.execute(text(DROP_INDEX))
                        conn.execute(text("ANALYZE"))
                    time_matching(engine, ids[:20])
                    entry["box_without_home_index_us"] = _stats(time_matching(engine, ids)[0])
                result["databases"][kind] = entry
            finally:
                engine.dispose()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"matching-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    result["file"] = str(path)
    return result


def table(result: dict[str, Any]) -> str:
    lines = [f"matching: {result['carers']:,} carers, {result['requests']:,} open requests "
             "(hospital care, waves of 3); µs per request, candidate search + strategy", "",
             f"{'database':10} {'search':34} {'n':>5} {'p50':>9} {'p95':>9} {'p99':>9} "
             f"{'mean':>9} {'found':>7}"]
    for kind, entry in result["databases"].items():
        rows = [("box around the job, widening", entry["indexed_us"],
                 entry["indexed_candidates_mean"]),
                ("brute force (every carer on duty)", entry["brute_force_us"],
                 entry["brute_force_candidates_mean"])]
        if "box_without_home_index_us" in entry:
            rows.insert(1, ("box, home index dropped", entry["box_without_home_index_us"],
                            entry["indexed_candidates_mean"]))
        for name, s, found in rows:
            lines.append(f"{kind:10} {name:34} {s['n']:5d} {s['p50']:9.0f} {s['p95']:9.0f} "
                         f"{s['p99']:9.0f} {s['mean']:9.0f} {found:7.1f}")
    lines.append(f"\nwritten to {result['file']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dolbom bench matching",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--carers", type=int, default=30_000)
    parser.add_argument("--requests", type=int, default=1_000)
    parser.add_argument("--db", default="sqlite,postgres",
                        help="comma-separated: sqlite, postgres")
    parser.add_argument("--brute-sample", type=int, default=50,
                        help="requests timed with the brute force too (it is slow)")
    parser.add_argument("--without-index", action="store_true",
                        help="also time the box with the home-coordinates index dropped")
    parser.add_argument("--out", type=Path, default=Path("var/bench"))
    args = parser.parse_args(argv)
    databases = [d.strip() for d in args.db.split(",") if d.strip()]
    if args.carers < 1 or args.requests < 1 or not databases:
        parser.error("--carers and --requests must be positive and --db name a database")
    print(table(run(args.carers, args.requests, databases, args.out,
                    brute_sample=min(args.brute_sample, args.requests),
                    without_index=args.without_index)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
