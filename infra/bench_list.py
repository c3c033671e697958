"""How fast the request list answers a dispatcher, and in how many database queries.

    dolbom bench list --requests 200 --db sqlite,postgres

In-process: the API on a fresh database holding `--requests` hospital requests of 20
families (fees priced, as the list shows them), then `GET /v1/requests` as a dispatcher,
`--calls` times. The list is the console's fallback view and every partner app's poll, so
its cost per row is what matters: the query count must not grow with the rows. Results: a
table, and JSON under var/bench/.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import event

from infra.bench import percentile
from infra.bench_load import database_url


def run(url: str, data_dir: Path, requests: int, calls: int) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from api.app import create_app
    from dispatch import commands as c
    from infra.db import upgrade
    from schemas.config import Settings

    upgrade(url)
    app = create_app(Settings(database_url=url, data_dir=data_dir, log_level="WARNING"))
    bus = app.state.bus
    families = [bus.handle(c.RegisterFamily(
        guardian_name="박보호", guardian_phone=f"+8210777{i:05d}", district="광산구",
        children=[c.ChildDetails(name="박아이", birth_date=date(2020, 3, 15))],
        consent_child_data=True, consent_health_data=True)) for i in range(20)]
    seoul = ZoneInfo("Asia/Seoul")  # 10:00 there: within the service's hours every day
    first = datetime.combine(datetime.now(seoul).date() + timedelta(days=1), dtime(10), seoul)
    for i in range(requests):
        family = families[i % len(families)]
        start = first + timedelta(days=i // len(families))
        bus.handle(c.SubmitRequest(service="hospital", family_id=family.id,
                                   child_id=family.children[0].id, start=start,
                                   end=start + timedelta(hours=4),
                                   location={"hospital": "전남대병원", "ward": "5층"}))
    token = bus.handle(c.CreateToken(name="bench-dispatcher", role="dispatcher"))
    queries = [0]

    def count(*_: Any, **__: Any) -> None:
        queries[0] += 1

    event.listen(app.state.engine, "before_cursor_execute", count)
    times, per_call = [], []
    with TestClient(app) as client:
        for _ in range(calls):
            queries[0] = 0
            started = time.perf_counter()
            answer = client.get("/v1/requests", headers={"Authorization": f"Bearer {token}"})
            times.append((time.perf_counter() - started) * 1000)
            per_call.append(queries[0])
            if answer.status_code != 200 or len(answer.json()) != requests:
                raise RuntimeError(f"GET /v1/requests answered {answer.status_code}")
    return {"rows": requests, "calls": calls, "queries_per_call": max(per_call),
            "ms": {"p50": percentile(times, 50), "p95": percentile(times, 95),
                   "max": max(times)}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dolbom bench list",
                                     description="GET /v1/requests: time and queries")
    parser.add_argument("--requests", type=int, default=200, help="rows in the list (≤ 200)")
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--db", default="sqlite", help="sqlite, postgres or both: sqlite,postgres")
    parser.add_argument("--out", type=Path, default=Path("var/bench"))
    args = parser.parse_args(argv)
    if not 1 <= args.requests <= 200:
        parser.error("--requests: 1 to 200 (the list shows at most 200)")
    kinds = [k.strip() for k in args.db.split(",") if k.strip()]
    for kind in kinds:
        if kind not in ("sqlite", "postgres"):
            parser.error(f"unknown database {kind!r} (sqlite or postgres)")
    result: dict[str, Any] = {"at": datetime.now(UTC).isoformat(),
                              "machine": platform.platform(), "databases": {}}
    for kind in kinds:
        with tempfile.TemporaryDirectory(prefix="dolbom-bench-list-") as tmp, \
                database_url(kind, Path(tmp)) as url:
            result["databases"][kind] = run(url, Path(tmp), args.requests, args.calls)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"list-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    print(f"GET /v1/requests over {args.requests} requests, {args.calls} calls, in-process")
    print(f"\n{'database':10} {'queries':>8} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    for kind, entry in result["databases"].items():
        ms = entry["ms"]
        print(f"{kind:10} {entry['queries_per_call']:8d} {ms['p50']:8.1f} {ms['p95']:8.1f} "
              f"{ms['max']:8.1f}")
    print(f"\nwritten to {path}")
    return 0
