"""The `dolbom` command line (CONTRACT.md, "Command line")."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from datetime import timedelta
from typing import Any

from schemas.config import Settings, get_settings


def _logging(settings: Settings) -> None:
    from infra.logging_setup import configure

    # Text or JSON lines (DOLBOM_LOG_FORMAT); phone numbers masked in both.
    configure(settings.log_level, settings.log_format)
    for noisy in ("kafka", "aiokafka", "faust", "mode", "twilio.http_client", "alembic",
                  "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def cmd_db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    from infra.db import upgrade

    upgrade(settings.database_url)
    print(f"database is up to date ({_safe_url(settings.database_url)})")
    return 0


def cmd_token_create(args: argparse.Namespace, settings: Settings) -> int:
    from dispatch import commands as c
    from dispatch.bootstrap import bootstrap
    from dispatch.db import make_engine
    from dispatch.domain.policy import load_policies

    bus = bootstrap(make_engine(settings.database_url), load_policies(settings.policy_dir))
    print(bus.handle(c.CreateToken(name=args.name, role=args.role)))
    return 0


def cmd_topics_create(args: argparse.Namespace, settings: Settings) -> int:
    from infra.topics import ensure_topics

    if not settings.kafka_bootstrap:
        print("set DOLBOM_KAFKA_BOOTSTRAP to the cluster (host:port[,host:port])", file=sys.stderr)
        return 2
    created = ensure_topics(settings.kafka_bootstrap, replication_factor=args.replication_factor)
    print("created: " + (", ".join(created) if created else "nothing (all topics exist)"))
    return 0


def _require_bootstrap(settings: Settings) -> str:
    if not settings.kafka_bootstrap:
        sys.exit("set DOLBOM_KAFKA_BOOTSTRAP (or use `dolbom up`, which starts a broker)")
    return settings.kafka_bootstrap


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    import faust

    from streams.app import create_app

    _require_bootstrap(settings)
    app = create_app(settings)
    # Our logging (masking, JSON when asked) stays; Faust would replace the root handlers.
    worker = faust.Worker(app, loglevel=settings.log_level.lower(), quiet=True,
                          override_logging=False)
    # No terminal spinner: its cursor codes would land in the log, mid-line (JSON logs too).
    worker.spinner = None
    worker.execute_from_commandline()
    return 0


def cmd_relay(args: argparse.Namespace, settings: Settings) -> int:
    from dispatch.db import make_engine
    from streams.relay import run_relay

    bootstrap = _require_bootstrap(settings)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    run_relay(make_engine(settings.database_url), bootstrap, settings.relay_poll_ms, stop)
    return 0


def cmd_api(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    uvicorn.run("api.app:create_app", factory=True, host=args.host, port=args.port,
                log_level=settings.log_level.lower(), access_log=False, log_config=None)
    return 0


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    from infra.supervisor import run_up

    return run_up(settings, host=args.host, port=args.port)


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from infra.demo import run_demo

    return run_demo(settings, host=args.host, port=args.port, fast=args.fast)


# -- privacy (개인정보보호법): the CLI only parses; dispatch/handlers/privacy.py does the work --

_AGE_UNITS = {"h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> timedelta:
    """`90d`, `12h`, `2w` → a timedelta; anything else is an argparse error."""
    import re

    found = re.fullmatch(r"\s*(\d{1,6})\s*([hdw])\s*", text.lower())
    if not found or int(found.group(1)) == 0:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give a positive number and a unit: 12h, 90d or 2w")
    return timedelta(seconds=int(found.group(1)) * _AGE_UNITS[found.group(2)])


def _privacy_bus(settings: Settings) -> Any:
    from dispatch.bootstrap import bootstrap
    from dispatch.db import make_engine
    from dispatch.domain.policy import load_policies

    return bootstrap(make_engine(settings.database_url, settings=settings),
                     load_policies(settings.policy_dir))


def cmd_privacy_purge(args: argparse.Namespace, settings: Settings) -> int:
    from dispatch import commands as c

    counts = _privacy_bus(settings).handle(
        c.PurgePersonalData(older_than=args.older_than, dry_run=args.dry_run))
    verb = "would anonymise" if args.dry_run else "anonymised"
    hours = int(args.older_than.total_seconds() // 3600)
    age = f"{hours // 24} days" if hours % 24 == 0 else f"{hours} hours"
    print(f"{verb} (finished more than {age} ago): "
          + ", ".join(f"{n} {kind}" for kind, n in counts.items()))
    return 0


def cmd_privacy_keygen(args: argparse.Namespace, settings: Settings) -> int:
    from dispatch.encryption import new_key

    print(new_key())
    return 0


def cmd_privacy_rotate(args: argparse.Namespace, settings: Settings) -> int:
    from dispatch import commands as c

    if not settings.data_key:
        print("set DOLBOM_DATA_KEY to the new key and DOLBOM_DATA_KEY_PREVIOUS to the old one",
              file=sys.stderr)
        return 2
    rows = _privacy_bus(settings).handle(c.RotateDataKey())
    print(f"re-encrypted {rows} rows with DOLBOM_DATA_KEY; DOLBOM_DATA_KEY_PREVIOUS can go")
    return 0


def _add_privacy(sub: Any) -> None:
    privacy = sub.add_parser("privacy", help="personal data (개인정보보호법)").add_subparsers(
        dest="privacy_command", required=True)
    purge = privacy.add_parser("purge", help="anonymise personal data of requests finished "
                               "long ago, keeping anonymous statistics")
    purge.add_argument("--older-than", required=True, type=parse_age, metavar="AGE",
                       help="e.g. 90d, 12h, 2w: finished (completed/cancelled) before then")
    purge.add_argument("--dry-run", action="store_true", help="count, change nothing")
    purge.set_defaults(func=cmd_privacy_purge)
    privacy.add_parser("keygen", help="print a new DOLBOM_DATA_KEY").set_defaults(
        func=cmd_privacy_keygen)
    privacy.add_parser("rotate", help="re-encrypt sensitive fields with DOLBOM_DATA_KEY "
                       "(old key in DOLBOM_DATA_KEY_PREVIOUS)").set_defaults(
        func=cmd_privacy_rotate)


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def cmd_broker_trim(args: argparse.Namespace, settings: Settings) -> int:
    """Delete records every group reading a topic has committed past (infra/retention.py)."""
    from infra.retention import TrimUnsupported, trim, trim_plan

    bootstrap = _require_bootstrap(settings)
    plan = trim_plan(bootstrap)
    for point in plan:
        where = f"{point.topic}[{point.partition}] starts at {point.start}"
        if point.safe is None:
            print(f"{where}: kept ({', '.join(point.blocked_by)} has not committed here)")
        else:
            print(f"{where}: every group has read below {point.safe}")
    if args.dry_run:
        return 0
    try:
        trimmed = trim(bootstrap, plan)
    except TrimUnsupported as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"trimmed {trimmed} partition(s)")
    return 0


def _add_broker(sub: Any) -> None:
    broker = sub.add_parser("broker", help="the Kafka broker").add_subparsers(
        dest="broker_command", required=True)
    trim = broker.add_parser("trim", help="delete records every consumer group has read")
    trim.add_argument("--dry-run", action="store_true", help="only show what would go")
    trim.set_defaults(func=cmd_broker_trim)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dolbom", description="돌봄콜: emergency childcare dispatch")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run the whole system on this machine")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=8000)
    up.set_defaults(func=cmd_up)

    demo = sub.add_parser("demo", help="`up` plus demo data and simulated carers")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--fast", action="store_true",
                      help="requests every 1-2 s and answers within a second (for tests)")
    demo.set_defaults(func=cmd_demo)

    api = sub.add_parser("api", help="run the HTTP API")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.set_defaults(func=cmd_api)

    sub.add_parser("worker", help="run a stream worker (Faust)").set_defaults(func=cmd_worker)
    sub.add_parser("relay", help="run the outbox relay").set_defaults(func=cmd_relay)

    db = sub.add_parser("db", help="database").add_subparsers(dest="db_command", required=True)
    db.add_parser("upgrade", help="apply migrations").set_defaults(func=cmd_db_upgrade)

    token = sub.add_parser("token", help="API tokens").add_subparsers(dest="token_command",
                                                                       required=True)
    create = token.add_parser("create", help="print a new API token")
    create.add_argument("--role", required=True, choices=["dispatcher", "intake", "admin"])
    create.add_argument("--name", required=True)
    create.set_defaults(func=cmd_token_create)

    topics = sub.add_parser("topics", help="Kafka topics").add_subparsers(dest="topics_command",
                                                                          required=True)
    tc = topics.add_parser("create", help="create the catalogue's topics")
    tc.add_argument("--replication-factor", type=int, default=1)
    tc.set_defaults(func=cmd_topics_create)
    _add_privacy(sub)
    _add_broker(sub)
    sub.add_parser("bench", help="measure end-to-end latency (see infra/bench.py)",
                   add_help=False)
    sub.add_parser("simulate", help="compare offer strategies on a synthetic day "
                   "(see infra/simulate/)", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # its own options, passed through untouched
        from infra.bench import main as bench_main

        return bench_main(argv[1:])
    if argv[:1] == ["simulate"]:  # its own options, passed through untouched
        from infra.simulate.command import main as simulate_main

        return simulate_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        settings = get_settings()
    except Exception as exc:  # a bad environment variable: say which, don't dump a trace
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    _logging(settings)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    from dispatch.domain.policy import PolicyError
    from dispatch.encryption import DataKeyError

    try:
        return int(args.func(args, settings) or 0)
    except PolicyError as exc:
        print(f"policy error: {exc}", file=sys.stderr)
        return 2
    except DataKeyError as exc:  # no key in production, a malformed key, a wrong key
        print(f"data key error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
