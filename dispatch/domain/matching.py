"""Candidate selection for visit-mode services: who may be offered a job, best first."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from dispatch.domain.model import Carer
from dispatch.domain.policy import ServicePolicy


@dataclass(frozen=True)
class Candidate:
    carer: Carer
    distance_km: float | None
    jobs_today: int


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    r = 6371.0
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * r * math.asin(math.sqrt(a))


def is_qualified(carer: Carer, policy: ServicePolicy, district: str | None) -> bool:
    return (carer.on_duty and not carer.opted_out
            and carer.has_skills(policy.required_skills)
            and (district is None or district in carer.districts))


def select_candidates(policy: ServicePolicy, carers: Iterable[Carer], *, district: str | None,
                      busy: set[str], exclude: set[str], jobs_today: Mapping[str, int],
                      lat: float | None = None, lon: float | None = None,
                      limit: int | None = None,
                      previous_location: Mapping[str, tuple[float, float]] | None = None,
                      ) -> list[Candidate]:
    """Qualified, on duty, serving the district, not opted out, free for the window.

    Ranked by distance when both sides have coordinates (unknown distance sorts last), then
    by fewest jobs today (spreading work fairly), then by rating. The distance is from where
    the carer will be: `previous_location[carer id]` (the place of the job they finish
    before this one on the same day) when given, else their home.
    """
    picked: list[Candidate] = []
    for carer in carers:
        if carer.id in busy or carer.id in exclude or not is_qualified(carer, policy, district):
            continue
        distance = None
        here = (previous_location or {}).get(carer.id)
        if here is None and carer.home_lat is not None and carer.home_lon is not None:
            here = (carer.home_lat, carer.home_lon)
        if lat is not None and lon is not None and here is not None:
            distance = haversine_km(lat, lon, *here)
        picked.append(Candidate(carer, distance, jobs_today.get(carer.id, 0)))
    picked.sort(key=lambda c: (c.distance_km is None, c.distance_km or 0.0, c.jobs_today,
                               -c.carer.rating, c.carer.id))
    return picked if limit is None else picked[:limit]
