"""What one request costs in database transactions, handler by handler, with nothing else
running: the floor under every paced-load figure.

    dolbom bench handlers --requests 200 --db sqlite,postgres

In-process, on a fresh database, the hospital path one request at a time, each step as the
process that runs it in service calls it: the API stores the request, the worker starts
matching, the sender claims and records the offers, the API stores the carer's YES, the
worker handles it, the sender sends what that queued. The SMS gateway answers at once, so
what is timed is the handler and its transactions. On SQLite every one of those
transactions holds the single write lock from BEGIN to COMMIT, so their sum per request
bounds the rate SQLite can take at all (1,000 ms / sum), before any contention; on
PostgreSQL it is CPU the worker and the API spend. Results: a table, and JSON under
var/bench/.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from infra.bench import percentile
from infra.bench_load import database_url

STEPS = ("API: store the request", "worker: start matching", "sender: offers",
         "API: store the YES", "worker: handle the YES", "sender: after the YES")


class _InstantSms:
    name = "instant"

    def __init__(self) -> None:
        self.sent = 0

    def send(self, to: str, body: str, *, validity_period: int | None = None) -> Any:
        from notifiers.gateway import SentSms

        self.sent += 1
        return SentSms(sid=f"SM{uuid.uuid4().hex}", status="queued")


def run(url: str, requests: int, carers: int = 60) -> dict[str, Any]:
    from dispatch import commands as c
    from dispatch.bootstrap import bootstrap
    from dispatch.db import make_engine
    from dispatch.domain.policy import load_policies
    from infra.db import upgrade
    from notifiers import grammar, intake_grammar, templates
    from streams.app import handle_collecting_sms

    upgrade(url)
    bus = bootstrap(make_engine(url), load_policies(), sms=_InstantSms(),
                    templates=templates.render, grammar=grammar.parse,
                    intake=intake_grammar.parse_request)
    for i in range(carers):
        carer = bus.handle(c.RegisterCarer(name=f"부하{i}", phone=f"+8210{70000000 + i:08d}",
                                           districts=["광산구"], skills=["hospital"]))
        bus.handle(c.SetDuty(carer_id=carer.id, on_duty=True))
    families = [bus.handle(c.RegisterFamily(
        guardian_name="박보호", guardian_phone=f"+8210{81000000 + i:08d}", district="광산구",
        children=[c.ChildDetails(name="박아이", birth_date=date(2020, 3, 15))],
        consent_child_data=True, consent_health_data=True)) for i in range(20)]
    samples: dict[str, list[float]] = {step: [] for step in STEPS}

    def timed(step: str, call: Callable[..., Any], *args: Any) -> Any:
        started = time.perf_counter()
        result = call(*args)
        samples[step].append((time.perf_counter() - started) * 1000)
        return result

    # One-hour hospital jobs two hours apart, 09:00-18:00 Seoul time, five a day.
    base = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) \
        + timedelta(days=1)
    for i in range(requests):
        family = families[i % len(families)]
        start = base + timedelta(days=i // 5, hours=2 * (i % 5))
        request, _ = timed(STEPS[0], bus.handle, c.SubmitRequest(
            service="hospital", family_id=family.id, child_id=family.children[0].id,
            start=start, end=start + timedelta(hours=1),
            location={"hospital": "전남대병원", "ward": "소아병동 5층"}))
        _, offers = timed(STEPS[1], handle_collecting_sms, bus, c.StartMatching(
            request_id=request.id, event_id=str(uuid.uuid4())))
        timed(STEPS[2], bus.handle, c.DeliverNotifications(notification_ids=tuple(offers)))
        with bus.uow_factory() as uow:
            loaded = uow.requests.get(request.id)
            assert loaded is not None and loaded.offers, "no carer was offered the job"
            carer = uow.carers.get(loaded.offers[0].carer_id)
            assert carer is not None
            phone, code = carer.phone, loaded.code
        sid = "SM" + uuid.uuid4().hex
        timed(STEPS[3], bus.handle, c.ReceiveSms(
            message_sid=sid, from_phone=phone, to_phone="+15005550006", body=f"YES {code}"))
        with bus.uow_factory() as uow:
            inbound = uow.inbound.by_sid(sid)
            assert inbound is not None
        _, queued = timed(STEPS[4], handle_collecting_sms, bus, c.HandleInboundSms(
            inbound_id=inbound.id, event_id=str(uuid.uuid4())))
        timed(STEPS[5], bus.handle, c.DeliverNotifications(notification_ids=tuple(queued)))
    warm = min(10, requests // 5)
    steps = {step: {"p50": percentile(v[warm:], 50), "p95": percentile(v[warm:], 95),
                    "mean": sum(v[warm:]) / len(v[warm:])} for step, v in samples.items()}
    total = sum(s["mean"] for s in steps.values())
    return {"warm_up": warm, "steps_ms": steps, "sum_of_means_ms": total,
            "requests_per_s_if_serial": 1000 / total}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dolbom bench handlers",
                                     description="database cost of one request, per handler")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--db", default="sqlite", help="sqlite, postgres or both: sqlite,postgres")
    parser.add_argument("--out", type=Path, default=Path("var/bench"))
    args = parser.parse_args(argv)
    result: dict[str, Any] = {"at": datetime.now(UTC).isoformat(),
                              "machine": platform.platform(), "requests": args.requests,
                              "databases": {}}
    kinds = [k.strip() for k in args.db.split(",") if k.strip()]
    for kind in kinds:
        if kind not in ("sqlite", "postgres"):
            parser.error(f"unknown database {kind!r} (sqlite or postgres)")
    for kind in kinds:
        with tempfile.TemporaryDirectory(prefix="dolbom-bench-handlers-") as tmp, \
                database_url(kind, Path(tmp)) as url:
            result["databases"][kind] = run(url, args.requests)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"handlers-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    print(f"one request at a time, {args.requests} requests, ms per step "
          "(the first few left out as warm-up)")
    print(f"\n{'database':10} {'step':28} {'p50':>7} {'p95':>7} {'mean':>7}")
    for kind, entry in result["databases"].items():
        for step, s in entry["steps_ms"].items():
            print(f"{kind:10} {step:28} {s['p50']:7.2f} {s['p95']:7.2f} {s['mean']:7.2f}")
        print(f"{kind:10} {'sum of means':28} {'':7} {'':7} {entry['sum_of_means_ms']:7.2f}"
              f"   -> {entry['requests_per_s_if_serial']:.0f} requests/s if run one after another")
    print(f"\nwritten to {path}")
    return 0
