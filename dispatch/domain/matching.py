"""Candidate selection for visit-mode services: who may be offered a job, best first."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
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


# How far from the job the search looks first, then widens: most jobs find their few nearest
# carers in the first box or two. Past the last radius the caller ranks every carer.
SEARCH_RADII_KM = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
_KM_PER_DEGREE_LAT = 111.0  # a little less than the true 111.2: the box errs on the big side


@dataclass(frozen=True)
class Box:
    """A latitude/longitude box: what a database index on home coordinates can answer."""

    south: float
    west: float
    north: float
    east: float

    def contains(self, lat: float, lon: float) -> bool:
        return self.south <= lat <= self.north and self.west <= lon <= self.east


def box_around(lat: float, lon: float, radius_km: float) -> Box:
    """A box holding every point within `radius_km` (great-circle) of (lat, lon)."""
    dlat = radius_km / _KM_PER_DEGREE_LAT
    # A degree of longitude shrinks towards the poles; take the widest the box can need.
    coslat = math.cos(math.radians(min(89.0, abs(lat) + dlat)))
    dlon = min(180.0, radius_km / (_KM_PER_DEGREE_LAT * max(coslat, 1e-6)))
    return Box(lat - dlat, lon - dlon, lat + dlat, lon + dlon)


def select_nearest(policy: ServicePolicy, carers_in: Callable[[Box], Iterable[Carer]], *,
                   enough: int, lat: float, lon: float, district: str | None, busy: set[str],
                   exclude: set[str], jobs_today: Mapping[str, int],
                   previous_location: Mapping[str, tuple[float, float]],
                   elsewhere: Iterable[Carer] = (),
                   radii_km: Iterable[float] = SEARCH_RADII_KM) -> list[Candidate] | None:
    """The best candidates by `select_candidates`' ranking, found without ranking everyone.

    Looks in a box around the job (`carers_in(box)`: carers on duty whose home is in it),
    widening until at least `enough` candidates lie within the radius the box was drawn
    for. Every carer within that radius has then been seen: one at home is in the box, and
    one setting off from an earlier job (`previous_location`) must be in `elsewhere`. So the
    candidates within the radius are exactly the head of the full ranking, and that head is
    what is returned: its first `enough`. None when even the widest circle holds too few:
    the caller must rank everyone.
    """
    others = list(elsewhere)
    for radius in radii_km:
        seen = {c.id: c for c in carers_in(box_around(lat, lon, radius))}
        for carer in others:
            seen.setdefault(carer.id, carer)
        ranked = select_candidates(policy, seen.values(), district=district, busy=busy,
                                   exclude=exclude, jobs_today=jobs_today, lat=lat, lon=lon,
                                   previous_location=previous_location)
        within = [c for c in ranked if c.distance_km is not None and c.distance_km <= radius]
        if len(within) >= enough:
            return within[:enough]
    return None
