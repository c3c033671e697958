"""The benchmarks run end to end and write their results: a tiny run of each, checked for the
shape of what it writes. Never timings (tests assert behaviour; benchmarks measure speed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra import bench_handlers, bench_list, bench_load, bench_matching
from infra.bench import main as bench_main

pytestmark = pytest.mark.e2e

PATHS = ("POST -> offer SMS", "YES -> parent SMS")


def _only_file(folder: Path, pattern: str) -> dict:  # type: ignore[type-arg]
    files = list(folder.glob(pattern))
    assert len(files) == 1, files
    return json.loads(files[0].read_text())


def test_a_tiny_paced_load_run_completes_and_writes_its_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(["load", "--rate", "2", "--duration", "3", "--carers", "6",
                       "--db", "sqlite", "--out", str(tmp_path)]) == 0
    result = _only_file(tmp_path, "load-sqlite-*.json")
    [run] = result["runs"]
    assert run["rate_per_s"] == 2 and run["submitted"] == 6
    # Every request got its offer and its assignment: the carers answered, nothing was lost.
    assert run["offered"] == run["completed"] == 6 and run["errors"] == {}
    for name in PATHS:
        path = run["paths"][name]
        assert path["n"] == 6
        assert 0 < path["p50"] <= path["p95"] <= path["p99"] <= path["max"]
        assert path["x_two_hop_floor_p50"] > 0
    assert run["broker_one_hop_ms"]["lost"] == 0
    # Messages per request: the local-only event never went through Kafka.
    counts = run["messages"]["by_type"]
    assert counts["request.matching"]["via_kafka"] == 0 < counts["request.matching"]["rows"]
    assert run["messages"]["kafka_messages_per_request"] < run["messages"]["outbox_rows_per_request"]
    assert set(run["peak_rss_kib"]) >= {"broker", "worker", "relay", "api"}
    assert all(v > 0 for v in run["peak_rss_kib"].values())
    # Where the time went, and what CPU it cost, from the system's own timestamps.
    assert set(run["stages_ms"]) == {"relay", "matching", "sending"}
    # (the untimed warm-up request is in the database too)
    assert all(s["n"] == 7 and s["p50"] >= 0 for s in run["stages_ms"].values())
    assert run["cpu_ms_per_request"]["worker"] > 0
    assert run["cpu_ms_per_request"]["all but the bench"] >= run["cpu_ms_per_request"]["worker"]
    printed = capsys.readouterr().out
    assert "POST -> offer SMS" in printed and "peak RSS" in printed


def test_a_small_matching_run_writes_both_searches(tmp_path: Path) -> None:
    result = bench_matching.run(400, 30, ["sqlite"], tmp_path, brute_sample=10)
    written = _only_file(tmp_path, "matching-*.json")
    assert written["carers"] == 400 and written["requests"] == 30
    entry = written["databases"]["sqlite"]
    assert entry["indexed_us"]["n"] == 30 and entry["brute_force_us"]["n"] == 10
    assert entry["indexed_us"]["p50"] > 0
    # A wave is three carers; the brute force ranks everyone qualified.
    assert entry["indexed_candidates_mean"] <= 3 <= entry["brute_force_candidates_mean"]
    assert "box around the job" in bench_matching.table(result)


def test_the_handler_bench_times_every_step_of_a_request(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(["handlers", "--requests", "12", "--out", str(tmp_path)]) == 0
    entry = _only_file(tmp_path, "handlers-*.json")["databases"]["sqlite"]
    assert set(entry["steps_ms"]) == set(bench_handlers.STEPS)
    assert all(s["mean"] > 0 for s in entry["steps_ms"].values())
    assert entry["sum_of_means_ms"] == pytest.approx(
        sum(s["mean"] for s in entry["steps_ms"].values()))
    assert "requests/s if run one after another" in capsys.readouterr().out


def test_the_request_list_asks_the_same_few_queries_however_many_rows(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    few = bench_list.run(f"sqlite:///{tmp_path / 'few.db'}", tmp_path, 3, calls=2)
    many = bench_list.run(f"sqlite:///{tmp_path / 'many.db'}", tmp_path, 40, calls=2)
    assert few["queries_per_call"] == many["queries_per_call"] <= 12
    assert bench_main(["list", "--requests", "5", "--calls", "2", "--out", str(tmp_path)]) == 0
    assert _only_file(tmp_path, "list-*.json")["databases"]["sqlite"]["rows"] == 5
    assert "queries" in capsys.readouterr().out


def test_sustained_stops_at_the_first_rate_that_does_not_hold() -> None:
    fast = {"n": 10, "p99": 900.0}
    ok = {"errors": {}, "submitted": 10, "completed": 10,
          "paths": {"POST -> offer SMS": fast, "YES -> parent SMS": fast}}
    assert bench_load.held(ok, 1000.0)
    assert not bench_load.held({**ok, "completed": 9}, 1000.0)
    assert not bench_load.held({**ok, "errors": {"POST answered 503": 1}}, 1000.0)
    for path in ("POST -> offer SMS", "YES -> parent SMS"):
        slow = {**ok, "paths": {**ok["paths"], path: {"n": 10, "p99": 1200.0}}}
        assert not bench_load.held(slow, 1000.0)


def test_bad_rates_are_refused_with_a_clear_message(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        bench_main(["load", "--rate", "10,fast"])
    assert exited.value.code == 2
    assert "not a list of rates" in capsys.readouterr().err
