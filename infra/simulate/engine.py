"""One synthetic day through the real dispatch code, in-process, on a simulated clock.

The bus is `dispatch.bootstrap.bootstrap` on a fresh, migrated SQLite database, with the real
templates and SMS grammar. What the deployed system does across processes happens here in
one, in the same order:

- the API's work: carers, families and requests go in through the same commands;
- the relay and the worker: after every command the new outbox rows are read in order,
  marked published, and each is turned into the worker's command by `streams.routing` (the
  mapping the Faust agents use) and handled at once;
- the notifier: `sms.requested` goes through a sender limited to `sms_rate_per_s`, as the
  rate-limited gateway does, so a burst of offers queues and late offers can go stale;
- the worker's timers: `SweepDeadlines` runs on the sweep tick at every moment a deadline
  falls due (an offer's answer window, a request's SLA). A sweep at any other tick finds
  nothing due and changes nothing, so this is the 1 s timer without its idle ticks;
- people: a carer who gets an offer answers `네 <code>` or `아니오 <code>` after their own
  delay, or never; a parent with no carer by the start time cancels (the search is over
  for them). Replies go in through `ReceiveSms`, as the Twilio webhook stores them.

Nothing here decides whom to offer: that is the policy's strategy, in dispatch/.
"""

from __future__ import annotations

import heapq
import math
import random
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, select, update

from dispatch import commands as c
from dispatch import orm
from dispatch.bootstrap import bootstrap
from dispatch.db import READ_ONLY, make_engine
from dispatch.domain.errors import Ineligible
from dispatch.domain.policy import ServicePolicy
from dispatch.messagebus import MessageBus
from infra.db import upgrade
from infra.simulate.population import Population, SimCarer, SimRequest
from notifiers import grammar, templates
from notifiers.gateway import SentSms
from schemas.envelope import Envelope
from streams.routing import command_for

SERVICE_NUMBER = "+82215880000"  # the number carers and parents text (simulated)
SENT_STATES = ("sent", "delivered")


class SimulatedClock:
    """The `clock` port: the simulator moves it; handlers read it."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class SimulatedPhones:
    """The SMS gateway: every message is handed to the simulated person with that number."""

    name: str = "simulated"
    sent: int = 0

    def send(self, to: str, body: str, *, validity_period: int | None = None) -> SentSms:
        self.sent += 1
        return SentSms(sid=f"SIM{self.sent:08d}", status="delivered")


@dataclass
class Fill:
    request_index: int
    carer_index: int
    seconds_to_fill: float
    km: float


@dataclass
class DayRun:
    """What happened on one simulated day under one strategy."""

    strategy: str
    requests: int
    rejected: int
    fills: list[Fill]
    escalated: int
    sms_by_kind: dict[str, int]
    offers_made: int
    wall_s: float
    commands: int
    rejected_codes: dict[str, int] = field(default_factory=dict)


@dataclass(order=True)
class _Event:
    at: datetime
    seq: int
    kind: str = field(compare=False)
    data: Any = field(compare=False, default=None)


def with_strategy(policies: dict[str, ServicePolicy], service: str, strategy: str,
                  wave_size: int | None = None) -> dict[str, ServicePolicy]:
    """The policies with `service`'s offer strategy (and wave size) replaced."""
    base = policies[service]
    update_: dict[str, Any] = {"strategy": strategy}
    if wave_size is not None:
        update_["wave_size"] = wave_size
    changed = dict(policies)
    changed[service] = base.model_copy(update={"offers": base.offers.model_copy(update=update_)})
    return changed


def simulate_day(population: Population, policies: dict[str, ServicePolicy], strategy: str, *,
                 wave_size: int | None = None, sms_rate_per_s: float = 1.0,
                 sweep_interval_s: float = 1.0, workdir: Path | None = None) -> DayRun:
    """Run the population's day with `strategy` on a fresh database; see the module doc."""
    service = population.scenario.service
    run_policies = with_strategy(policies, service, strategy, wave_size)
    if workdir is None and Path("/dev/shm").is_dir():
        workdir = Path("/dev/shm")  # a throwaway database: memory-backed where there is one
    with tempfile.TemporaryDirectory(prefix="dolbom-sim-", dir=workdir) as tmp:
        url = f"sqlite:///{Path(tmp) / 'sim.db'}"
        upgrade(url)
        engine = make_engine(url)
        _throwaway(engine)
        try:
            day = _Day(engine, population, run_policies, strategy, sms_rate_per_s,
                       sweep_interval_s)
            return day.run()
        finally:
            engine.dispose()


def _throwaway(engine: Engine) -> None:
    """No fsync: the simulated day's database is deleted when the run ends, so durability
    buys nothing here (the same SQL runs; only the disk waits go)."""

    @event.listens_for(engine, "connect")
    def _no_sync(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA synchronous=OFF")
        cur.close()


class _Day:
    def __init__(self, engine: Engine, population: Population,
                 policies: dict[str, ServicePolicy], strategy: str, sms_rate_per_s: float,
                 sweep_interval_s: float) -> None:
        if sms_rate_per_s <= 0 or sweep_interval_s <= 0:
            raise ValueError("sms_rate_per_s and sweep_interval_s must be positive")
        self.engine = engine
        self.population = population
        self.policy = policies[population.scenario.service]
        self.strategy = strategy
        first = min((r.submit_at for r in population.requests),
                    default=datetime.combine(population.scenario.day, datetime.min.time(), UTC))
        self.t0 = first - timedelta(minutes=10)
        self.clock = SimulatedClock(self.t0)
        self.bus: MessageBus = bootstrap(engine, policies, sms=SimulatedPhones(),
                                         templates=templates.render, grammar=grammar.parse,
                                         clock=self.clock)
        self.send_gap = timedelta(seconds=1 / sms_rate_per_s)
        self.tick = sweep_interval_s
        self.events: list[_Event] = []
        self.seq = 0
        self.last_outbox_id = 0
        self.sender_free_at = self.t0
        self.sweeps_at: set[datetime] = set()
        self.commands = 0
        self.inbound = 0
        # What the simulator knows of the system, from the messages it emitted.
        self.carer_by_phone: dict[str, SimCarer] = {}
        self.carer_by_id: dict[str, SimCarer] = {}
        self.request_by_id: dict[str, SimRequest] = {}
        self.request_by_code: dict[str, SimRequest] = {}
        self.assigned: set[str] = set()
        self.escalated: set[str] = set()
        self.rejected: Counter[str] = Counter()

    # -- the event queue -----------------------------------------------------------
    def at(self, when: datetime, kind: str, data: Any = None) -> None:
        self.seq += 1
        heapq.heappush(self.events, _Event(when, self.seq, kind, data))

    def sweep_at(self, due: datetime) -> None:
        """A sweep on the first timer tick at or after `due`."""
        ticks = math.ceil((due - self.t0).total_seconds() / self.tick - 1e-9)
        when = self.t0 + timedelta(seconds=max(ticks, 0) * self.tick)
        if when not in self.sweeps_at:
            self.sweeps_at.add(when)
            self.at(when, "sweep")

    def handle(self, command: c.Command) -> Any:
        self.commands += 1
        result = self.bus.handle(command)
        self.pump()
        return result

    # -- the day ---------------------------------------------------------------------
    def run(self) -> DayRun:
        started = time.perf_counter()
        self.register()
        for request in self.population.requests:
            self.at(request.submit_at, "submit", request)
        while self.events:
            event = heapq.heappop(self.events)
            self.clock.now = max(self.clock.now, event.at)
            getattr(self, "on_" + event.kind)(event.data)
        return self.collect(time.perf_counter() - started)

    def register(self) -> None:
        for carer in self.population.carers:
            made = self.handle(c.RegisterCarer(
                name=carer.name, phone=carer.phone, districts=list(carer.districts),
                skills=list(carer.skills), home_lat=carer.lat, home_lon=carer.lon))
            self.handle(c.SetDuty(carer_id=made.id, on_duty=True))
            self.carer_by_phone[carer.phone] = carer
            self.carer_by_id[made.id] = carer

    def on_submit(self, request: SimRequest) -> None:
        family = self.handle(c.RegisterFamily(
            guardian_name=request.guardian_name, guardian_phone=request.guardian_phone,
            district=request.district,
            children=[c.ChildDetails(name=request.child_name, birth_date=request.birth_date)],
            consent_child_data=True, consent_health_data=True,
            address=request.location.get("address")))
        try:
            stored, _ = self.handle(c.SubmitRequest(
                service=self.policy.id, family_id=family.id, child_id=family.children[0].id,
                start=request.start, end=request.end, location=dict(request.location),
                idempotency_key=f"sim-{request.index}", channel="api"))
        except Ineligible as exc:  # the parent was told why; nothing else happens
            self.rejected[exc.code] += 1
            return
        self.request_by_id[stored.id] = request
        self.request_by_code[stored.code] = request
        self.at(request.start, "give_up", stored.id)

    def on_deliver(self, sms: tuple[str, bool]) -> None:
        notification_id, to_carer = sms
        self.handle(c.DeliverNotification(notification_id=notification_id))
        if not to_carer:
            return  # parents only read: what they do next is not part of this model
        with self.engine.connect() as conn:
            note = conn.execute(select(orm.notifications.c.kind, orm.notifications.c.recipient,
                                       orm.notifications.c.params, orm.notifications.c.status)
                                .where(orm.notifications.c.id == notification_id)).one()
        carer = self.carer_by_phone.get(note.recipient)
        if note.kind != "offer" or carer is None or note.status not in SENT_STATES:
            return
        code = str(note.params["code"])
        request = self.request_by_code.get(code)
        if request is None:
            return
        # The carer's answer to this offer: drawn from its own seeded stream, so the answer
        # does not depend on what else happened first (strategies see the same people).
        rng = random.Random(f"{self.population.scenario.seed}:{carer.index}:{request.index}")
        if rng.random() >= carer.respond_p:
            return  # never answers; the offer runs out
        delay = carer.reply_median_s * math.exp(rng.gauss(0, self.population.scenario.reply_sigma))
        body = f"네 {code}" if rng.random() < carer.accept_p else f"아니오 {code}"
        self.at(self.clock.now + timedelta(seconds=max(1.0, delay)), "reply", (carer, body))

    def on_reply(self, reply: tuple[SimCarer, str]) -> None:
        carer, body = reply
        self.inbound += 1
        self.handle(c.ReceiveSms(message_sid=f"SIM-IN-{self.inbound:08d}",
                                 from_phone=carer.phone, to_phone=SERVICE_NUMBER, body=body))

    def on_sweep(self, _: Any) -> None:
        self.sweeps_at.discard(self.clock.now)
        limit = 100
        counts = self.handle(c.SweepDeadlines(limit=limit))
        if counts["requests"] >= limit:  # more were due than one sweep takes: next tick
            self.sweep_at(self.clock.now + timedelta(seconds=self.tick))

    def on_give_up(self, request_id: str) -> None:
        """The start time came with no carer: the parent has made other arrangements."""
        if request_id in self.assigned:
            return
        self.handle(c.CancelRequest(request_id=request_id, actor="parent",
                                    reason="no carer by the start time (simulated parent)"))

    # -- relay + worker ----------------------------------------------------------------
    def pump(self) -> None:
        """Publish new outbox rows in order and run what the worker runs for each."""
        while True:
            # Read as the SQLite relay does (no write lock), then mark what was read.
            with self.engine.connect().execution_options(**{READ_ONLY: True}) as conn, \
                    conn.begin():
                rows = list(conn.execute(
                    select(orm.outbox.c.id, orm.outbox.c.key, orm.outbox.c.body)
                    .where(orm.outbox.c.id > self.last_outbox_id).order_by(orm.outbox.c.id)))
            if not rows:
                return
            with self.engine.begin() as conn:
                conn.execute(update(orm.outbox).where(orm.outbox.c.id.in_([r.id for r in rows]))
                             .values(published_at=self.clock.now))
            for row in rows:
                self.last_outbox_id = row.id
                envelope = Envelope.from_bytes(bytes(row.body))
                self.observe(envelope)
                command = command_for(envelope)
                if isinstance(command, c.DeliverNotification):
                    # An SMS's key is its recipient: only carers' messages need a closer look.
                    self.queue_sms(command.notification_id, row.key in self.carer_by_phone)
                elif command is not None:
                    self.commands += 1
                    self.bus.handle(command)

    def observe(self, envelope: Envelope) -> None:
        payload = envelope.payload
        if envelope.type == "request.received":
            self.sweep_at(envelope.occurred_at + timedelta(seconds=self.policy.escalate_after_s))
        elif envelope.type == "request.assigned":
            self.assigned.add(payload["request_id"])
        elif envelope.type == "request.escalated":
            self.escalated.add(payload["request_id"])
        elif envelope.type == "request.matching":
            # New offers: their answer windows end timeout_s from now.
            self.sweep_at(self.clock.now + timedelta(seconds=self.policy.offers.timeout_s))

    def queue_sms(self, notification_id: str, to_carer: bool) -> None:
        """The notifier: one sender, `sms_rate_per_s` messages a second, in queue order."""
        when = max(self.clock.now, self.sender_free_at)
        self.sender_free_at = when + self.send_gap
        self.at(when, "deliver", (notification_id, to_carer))

    # -- results -------------------------------------------------------------------------
    def collect(self, wall_s: float) -> DayRun:
        from dispatch.domain.matching import haversine_km

        r, a, n, o = orm.requests.c, orm.assignments.c, orm.notifications.c, orm.offers.c
        with self.engine.connect() as conn:
            created = dict(conn.execute(select(r.id, r.created_at)).all())
            first: dict[str, tuple[datetime, str]] = {}
            for request_id, at, carer_id in conn.execute(
                    select(a.request_id, a.created_at, a.carer_id).order_by(a.created_at)):
                first.setdefault(request_id, (at, carer_id))
            sms: Counter[str] = Counter(
                kind for (kind,) in conn.execute(select(n.kind).where(n.status.in_(SENT_STATES))))
            offers_made = len(conn.execute(select(o.id)).all())
        fills = []
        for request_id, request in self.request_by_id.items():
            won = first.get(request_id)
            if won is None or won[0] > request.start:
                continue
            carer = self.carer_by_id[won[1]]
            fills.append(Fill(request.index, carer.index,
                              (won[0] - created[request_id]).total_seconds(),
                              haversine_km(carer.lat, carer.lon, request.lat, request.lon)))
        fills.sort(key=lambda f: f.request_index)
        return DayRun(strategy=self.strategy, requests=len(self.population.requests),
                      rejected=sum(self.rejected.values()), fills=fills,
                      escalated=len(self.escalated), sms_by_kind=dict(sorted(sms.items())),
                      offers_made=offers_made, wall_s=wall_s, commands=self.commands,
                      rejected_codes=dict(self.rejected))
