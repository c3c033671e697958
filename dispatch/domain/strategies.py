"""Offer strategies: whom to offer a visit job to now, given what has been offered so far.

A policy's `offers.strategy` picks one (DESIGN.md: policies held as data):

- `broadcast`: every candidate at once; the first YES wins. Anyone who becomes a candidate
  later (back on duty, a clash resolved) is offered the next time the engine looks.
- `waves`: the best `wave_size` candidates; the next `wave_size` (the circle widens to the
  next best) once the current wave is over, that is once none of its offers is still open:
  every one declined, undelivered or expired (`timeout_s` after it went out). A wave that
  has all said NO moves on at once, without waiting for the timeout.
- `sequential`: one carer at a time; the next one after a NO or the timeout.

Pure: no clock, no I/O. The caller marks offers past their deadline as expired first
(`Request.expire_offers`) and passes candidates already filtered (qualified, free) and
ranked best first. The function never names a carer who has had an offer for this request
(whatever became of it), names each carer at most once, and never leaves more than
`wave_size` offers open (one for `sequential`) if it was called with no more than that open.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from dispatch.domain.policy import OfferRules


class OfferState(Protocol):
    """What a strategy reads of an offer (dispatch.domain.model.Offer fits)."""

    @property
    def carer_id(self) -> str: ...

    @property
    def is_open(self) -> bool: ...


def next_offers(rules: OfferRules, offers: Iterable[OfferState],
                ranked: Sequence[str]) -> list[str]:
    """The carer ids to offer the job to now, best first; [] means wait (or nobody left)."""
    offers = list(offers)
    asked = {o.carer_id for o in offers}
    fresh = [carer_id for carer_id in dict.fromkeys(ranked) if carer_id not in asked]
    still_open = sum(1 for o in offers if o.is_open)
    if rules.strategy == "broadcast":
        return fresh
    if rules.strategy == "sequential":
        return [] if still_open else fresh[:1]
    if rules.strategy == "waves":
        return [] if still_open else fresh[:rules.wave_size]
    raise ValueError(f"unknown offer strategy {rules.strategy!r}")
