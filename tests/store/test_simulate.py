"""The dispatch simulator (`dolbom simulate`): tiny days through the real bus on SQLite."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from dispatch.domain.policy import load_policies
from infra.cli import main as dolbom
from infra.simulate.command import calibrate
from infra.simulate.engine import simulate_day
from infra.simulate.population import DISTRICTS, Population, Scenario, build_population
from infra.simulate.report import summarize

POLICIES = load_policies()
SERVICE = "home-emergency"


def tiny_day(*, carers: int = 4, requests: int = 3, accept: float = 1.0, respond: float = 1.0,
             seed: int = 1, everywhere: bool = True, instant: bool = True) -> Population:
    """A small day; `everywhere`: every carer serves all five districts (nobody is out of
    reach, so only their answers and their diaries decide)."""
    scenario = Scenario(seed=seed, carers=carers, requests=requests, accept=accept,
                        respond=respond, service=SERVICE,
                        reply_median_s=(1.0, 1.0) if instant else (30.0, 300.0),
                        reply_sigma=0.0 if instant else 0.8)
    population = build_population(scenario, POLICIES[SERVICE])
    if everywhere:
        population = replace(population, carers=tuple(
            replace(c, districts=tuple(DISTRICTS)) for c in population.carers))
    return population


def test_same_seed_same_day_same_results() -> None:
    def once() -> object:
        population = tiny_day(carers=5, requests=4, accept=0.5, respond=0.8, seed=7,
                              everywhere=False, instant=False)
        return population, replace(simulate_day(population, POLICIES, "waves", wave_size=2),
                                   wall_s=0.0)

    first, second = once(), once()
    assert first == second
    other = tiny_day(carers=5, requests=4, accept=0.5, respond=0.8, seed=8, everywhere=False)
    assert other.requests != first[0].requests  # type: ignore[index]


def test_everyone_says_yes_at_once_sequential_fills_every_request() -> None:
    population = tiny_day(carers=5, requests=4)
    run = simulate_day(population, POLICIES, "sequential")
    assert run.rejected == 0
    assert sorted(f.request_index for f in run.fills) == [0, 1, 2, 3]
    # One carer asked per request, the first one says YES: one offer per fill, no "closed".
    assert run.sms_by_kind["offer"] == 4
    assert run.sms_by_kind.get("offer_rescinded", 0) == 0
    assert run.sms_by_kind["assigned"] == 4  # every parent was told who is coming
    assert all(f.seconds_to_fill < 60 for f in run.fills)
    result = summarize(run, population, POLICIES[SERVICE])
    assert result.fill_rate == 1.0
    assert result.escalated == 0
    assert result.optimum_mean_km is not None and result.mean_km is not None
    assert result.optimum_mean_km <= result.mean_km + 1e-9


def test_nobody_says_yes_nothing_fills_and_every_request_escalates() -> None:
    population = tiny_day(carers=4, requests=3, accept=0.0)
    for strategy in ("sequential", "broadcast"):
        run = simulate_day(population, POLICIES, strategy)
        assert run.fills == []
        assert run.escalated == 3
        assert run.sms_by_kind["escalated"] == 3  # each parent told a dispatcher is on it
        assert run.sms_by_kind["declined_ack"] == run.offers_made == 12  # all asked, all NO


def test_broadcast_texts_more_carers_than_sequential_on_the_same_day() -> None:
    population = tiny_day(carers=5, requests=3)
    sequential = simulate_day(population, POLICIES, "sequential")
    broadcast = simulate_day(population, POLICIES, "broadcast")
    assert len(sequential.fills) == len(broadcast.fills) == 3
    assert broadcast.offers_made > sequential.offers_made
    assert broadcast.sms_by_kind.get("offer_rescinded", 0) > 0  # the others were told


def test_dolbom_simulate_writes_the_table_json_and_plot(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    code = dolbom(["simulate", "--seed", "3", "--carers", "4", "--requests", "3",
                   "--strategies", "sequential,broadcast", "--jobs", "2",
                   "--out", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "sequential" in out and "broadcast" in out and "53.5%" in out
    png = (tmp_path / "simulate-seed3.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
    data = json.loads((tmp_path / "simulate-seed3.json").read_text(encoding="utf-8"))
    assert [s["strategy"] for s in data["strategies"]] == ["sequential", "broadcast"]
    assert data["scenario"]["carers"] == 4 and data["scenario"]["requests"] == 3
    assert data["pilot"]["requests"] == 144
    assert data["recommendation"].startswith(("Use `", "No strategy"))
    for row in data["strategies"]:
        assert row["requests"] == 3 and 0 <= row["filled"] <= 3


@pytest.mark.parametrize("args, message", [
    (["--strategies", "fastest"], "unknown strategy fastest"),
    (["--service", "emergency-center"], "visit-mode service"),
    (["--accept", "1.5"], "accept must be between 0 and 1"),
    (["--wave-size", "0"], "--wave-size must be at least 1"),
])
def test_bad_options_get_a_clear_error_and_write_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
        message: str) -> None:
    code = dolbom(["simulate", "--carers", "2", "--requests", "1", "--out", str(tmp_path), *args])
    assert code == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_calibration_bisects_towards_the_target_fill_rate() -> None:
    scenario = Scenario(seed=5, carers=3, requests=4, service=SERVICE, respond=1.0)
    fitted, tried = calibrate(scenario, POLICIES, target=0.25, steps=3)
    assert [t["accept"] for t in tried][0] == 0.5
    moves = []
    for before, after in zip(tried, tried[1:], strict=False):
        # Below the target → more willing carers next; at or above → fewer.
        moves.append(after["accept"] > before["accept"])
        assert moves[-1] == (before["fill_rate"] < 0.25)
    assert moves == [True, False]  # this day needs both: 0.5 fills too few, 0.75 enough
    closest = min(tried, key=lambda t: abs(t["fill_rate"] - 0.25))
    assert fitted.accept == closest["accept"]
    assert replace(fitted, accept=scenario.accept) == scenario  # only the fitted knob moved
