"""A seeded synthetic Gwangju: carers with homes, skills and habits; a day of demand.

Everything here is drawn from one `random.Random(seed)`, so a seed names one city and one
day. The figures that shape it (DOMAIN.md, with what is assumed said so):

- five 자치구, with rough centres and population shares (북구 and 광산구 are the largest,
  동구 the smallest; shares rounded from the 2024 resident registers — an approximation);
- demand over the day: the 2022 survey has use clustering at 07–09 (60.4 % of
  respondents) and 17–19 (99.6 %) (DOMAIN.md §3); start hours are drawn with weights in
  that proportion on a flat daytime base, nights low;
- lead times and durations inside what the service's policy accepts (긴급: booked 2–4 h
  ahead, at least 2 h long);
- carers: a home in their district, serving it and (half of them) one neighbouring district,
  each with their own chance of answering at all, of saying YES, and a typical reply delay.
  Those three are the behaviour nobody has published: they are the calibration knobs.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from scipy.special import betaincinv

from dispatch.domain.errors import Ineligible
from dispatch.domain.policy import ServicePolicy, check_request


@dataclass(frozen=True)
class District:
    lat: float
    lon: float
    spread_km: float
    share: float
    neighbours: tuple[str, ...]


DISTRICTS: dict[str, District] = {
    "동구": District(35.146, 126.923, 1.8, 0.07, ("서구", "남구", "북구")),
    "서구": District(35.152, 126.890, 2.2, 0.20, ("동구", "남구", "북구", "광산구")),
    "남구": District(35.133, 126.902, 2.2, 0.15, ("동구", "서구")),
    "북구": District(35.174, 126.912, 2.8, 0.30, ("동구", "서구", "광산구")),
    "광산구": District(35.140, 126.794, 3.5, 0.28, ("서구", "북구")),
}

# Where hospitalised children are (approximate coordinates; district as the ward's).
HOSPITALS: tuple[tuple[str, str, float, float, float], ...] = (
    ("전남대병원", "동구", 35.1422, 126.9220, 0.35),
    ("조선대병원", "동구", 35.1390, 126.9290, 0.25),
    ("광주기독병원", "남구", 35.1362, 126.9100, 0.20),
    ("광주보훈병원", "광산구", 35.1530, 126.8260, 0.10),
    ("광주씨티병원", "서구", 35.1520, 126.8880, 0.10),
)

# Relative weight of each local start hour (index = hour). Daytime base 1; 07–09 and 17–19
# in the survey's proportion (60.4 : 99.6), scaled so the evening peak is 5× the base.
HOURLY_DEMAND: tuple[float, ...] = tuple(
    5.0 if h in (17, 18) else 5.0 * 60.4 / 99.6 if h in (7, 8) else 1.0 if 6 <= h <= 21 else 0.2
    for h in range(24))

SURNAMES = "김이박최정강조윤장임한오서신권황안송류홍"
GIVEN = ("민지", "서연", "지우", "하은", "수빈", "예린", "지현", "은정", "미영", "소희", "유진",
         "다은", "현주", "정숙", "영희", "혜진", "지은", "보람", "가영", "나연")


@dataclass(frozen=True)
class Scenario:
    """One synthetic day. The behaviour knobs are means over carers (each carer draws their own)."""

    seed: int = 1
    # The defaults are the scenario calibrated to the pilot (README, "Simulator"): the national
    # carer:household ratio (0.21), and the mean YES that `--calibrate` fitted (0.375) for
    # `sequential` to fill the pilot's 53.5 % on seed 1.
    carers: int = 42
    requests: int = 200
    service: str = "home-emergency"
    accept: float = 0.375         # P(YES) when a carer answers an offer
    respond: float = 0.8          # P(a carer answers an offer at all, before it runs out)
    reply_median_s: tuple[float, float] = (60.0, 600.0)  # range of carers' typical delays
    reply_sigma: float = 0.8      # spread of one carer's delays (lognormal)
    second_district: float = 0.5  # share of carers who also serve a neighbouring district
    hospital_skill: float = 0.5   # share of carers with the hospital-care qualification
    day: date = date(2026, 11, 26)

    def __post_init__(self) -> None:
        for name in ("accept", "respond", "second_district", "hospital_skill"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, not {value}")
        if self.carers < 0 or self.requests < 0:
            raise ValueError("carers and requests must not be negative")
        low, high = self.reply_median_s
        if not 0 < low <= high:
            raise ValueError("reply_median_s must be (low, high) with 0 < low <= high")


@dataclass(frozen=True)
class SimCarer:
    index: int
    name: str
    phone: str
    district: str
    districts: tuple[str, ...]
    skills: tuple[str, ...]
    lat: float
    lon: float
    accept_p: float
    respond_p: float
    reply_median_s: float


@dataclass(frozen=True)
class SimRequest:
    index: int
    guardian_name: str
    guardian_phone: str
    child_name: str
    birth_date: date
    district: str
    submit_at: datetime
    start: datetime
    end: datetime
    location: dict[str, Any]

    @property
    def lat(self) -> float:
        return float(self.location["lat"])

    @property
    def lon(self) -> float:
        return float(self.location["lon"])


@dataclass(frozen=True)
class Population:
    scenario: Scenario
    carers: tuple[SimCarer, ...]
    requests: tuple[SimRequest, ...]


def build_population(scenario: Scenario, policy: ServicePolicy) -> Population:
    if policy.mode != "visit":
        raise ValueError(f"{policy.id} is a {policy.mode}-mode service; the simulator compares "
                         "offer strategies, which only visit-mode services use")
    rng = random.Random(f"dolbom-simulate:{scenario.seed}")
    names = list(DISTRICTS)
    shares = [DISTRICTS[d].share for d in names]
    carers = []
    for i in range(scenario.carers):
        district = rng.choices(names, shares)[0]
        lat, lon = _point_in(rng, district)
        served = [district]
        if rng.random() < scenario.second_district:
            served.append(rng.choice(DISTRICTS[district].neighbours))
        skills = ("hospital",) if rng.random() < scenario.hospital_skill else ()
        low, high = scenario.reply_median_s
        carers.append(SimCarer(
            index=i, name=_name(rng), phone=f"+8210{20_000_000 + i:08d}", district=district,
            districts=tuple(served), skills=skills, lat=lat, lon=lon,
            accept_p=_beta_around(rng, scenario.accept, 4.0),
            respond_p=_beta_around(rng, scenario.respond, 6.0),
            reply_median_s=math.exp(rng.uniform(math.log(low), math.log(high)))))
    requests = [_request(rng, i, scenario, policy, names, shares)
                for i in range(scenario.requests)]
    requests.sort(key=lambda r: (r.submit_at, r.index))
    return Population(scenario, tuple(carers), tuple(requests))


def _request(rng: random.Random, index: int, scenario: Scenario, policy: ServicePolicy,
             names: list[str], shares: list[float]) -> SimRequest:
    tz = policy.tz
    district = rng.choices(names, shares)[0]
    age_years = rng.randint(max(1, policy.min_age_months // 12 + 1),
                            max(1, min(9, policy.max_age_months // 12)))
    birth = scenario.day.replace(year=scenario.day.year - age_years) - timedelta(
        days=rng.randint(1, 300))
    low_lead = policy.min_lead_minutes + 5
    high_lead = (policy.max_lead_minutes - 5) if policy.max_lead_minutes else low_lead + 180
    durations = [m for m in range(policy.min_duration_minutes,
                                  min(policy.max_duration_minutes, 6 * 60) + 1, 60)] or \
        [policy.min_duration_minutes]
    for _ in range(200):
        hour = rng.choices(range(24), HOURLY_DEMAND)[0]
        local = datetime.combine(scenario.day, time(hour), tz) + timedelta(
            minutes=rng.randrange(0, 60, 5))
        start = local.astimezone(UTC)
        end = start + timedelta(minutes=rng.choice(durations))
        submit_at = start - timedelta(minutes=rng.uniform(low_lead, high_lead))
        location = _location(rng, policy, district, index)
        try:
            check_request(policy, birth_date=birth, start=start, end=end, location=location,
                          now=submit_at, consent_health_data=True)
        except Ineligible:
            continue  # outside the service's hours: draw again, as a parent would ask again
        return SimRequest(index=index, guardian_name=_name(rng),
                          guardian_phone=f"+8210{30_000_000 + index:08d}",
                          child_name=_name(rng), birth_date=birth,
                          district=str(location["district"]), submit_at=submit_at,
                          start=start, end=end, location=location)
    raise ValueError(f"could not draw a request the {policy.id} policy accepts")


def _location(rng: random.Random, policy: ServicePolicy, district: str,
              index: int) -> dict[str, Any]:
    if "hospital" in policy.location_fields:
        name, ward_district, lat, lon, _ = rng.choices(HOSPITALS, [h[4] for h in HOSPITALS])[0]
        return {"hospital": name, "ward": f"소아병동 {rng.randint(3, 9)}층",
                "district": ward_district, "lat": lat, "lon": lon}
    lat, lon = _point_in(rng, district)
    return {"district": district, "address": f"광주 {district} 모의주소 {index + 1}",
            "lat": round(lat, 5), "lon": round(lon, 5)}


def _point_in(rng: random.Random, district: str) -> tuple[float, float]:
    d = DISTRICTS[district]
    km_lat = 111.0
    km_lon = 111.0 * math.cos(math.radians(d.lat))
    return (d.lat + rng.gauss(0, d.spread_km) / km_lat, d.lon + rng.gauss(0, d.spread_km) / km_lon)


def _beta_around(rng: random.Random, mean: float, concentration: float) -> float:
    """A carer's own probability: spread around the population mean (0 and 1 stay exact).

    One uniform draw through the Beta quantile function, whatever the mean: the rest of the
    city does not change when only the mean does (calibration compares like with like)."""
    u = rng.random()
    if mean <= 0.0 or mean >= 1.0:
        return mean
    return float(betaincinv(mean * concentration, (1 - mean) * concentration, u))


def _name(rng: random.Random) -> str:
    return rng.choice(SURNAMES) + rng.choice(GIVEN)
