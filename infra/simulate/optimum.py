"""The day's offline optimum: who should have taken each filled job, knowing the whole day.

The online engine decides one request at a time, with what it knows then. With hindsight,
the same filled jobs could be shared out among the same carers so that the carers travel
least. "Could" means: the carer is qualified (skills, serves the district) and never holds
two jobs that overlap once the policy's travel buffer is added (the engine's own rule). A
carer may take several jobs that do not overlap.

`scipy.optimize.linear_sum_assignment` solves it as an assignment: each carer is given as
many slots as the most non-overlapping jobs they could do in the day, infeasible pairs cost
`INFEASIBLE`. That ignores overlaps between two jobs of one carer, so it is a lower bound;
when its answer has no such overlap it is the optimum. When it has, the exact problem is
solved as a small integer program (`scipy.optimize.milp`: one job each, and at every moment
at most one job per carer). The result says which method gave the answer.

Distance is from the carer's home to the job (haversine), for the online fills and the
optimum alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, linear_sum_assignment, milp
from scipy.sparse import lil_matrix

from dispatch.domain.matching import haversine_km

INFEASIBLE = 1e6  # km: dearer than any real pairing, so the solver uses one only if it must


@dataclass(frozen=True)
class Job:
    start: datetime
    end: datetime
    lat: float
    lon: float
    district: str
    skills: tuple[str, ...] = ()


@dataclass(frozen=True)
class Worker:
    lat: float
    lon: float
    districts: tuple[str, ...]
    skills: tuple[str, ...] = ()


@dataclass(frozen=True)
class Optimum:
    mean_km: float | None
    assignment: tuple[int, ...]  # worker index per job
    method: str                  # "assignment", "integer program" or "lower bound"


def offline_optimum(jobs: Sequence[Job], workers: Sequence[Worker], *,
                    buffer: timedelta = timedelta(0), time_limit_s: float = 60.0) -> Optimum:
    if not jobs:
        return Optimum(None, (), "assignment")
    feasible = np.array([[_qualified(w, j) for w in workers] for j in jobs], dtype=bool)
    if not feasible.any(axis=1).all():
        raise ValueError("a filled job has no qualified carer: the jobs and carers disagree")
    km = np.array([[haversine_km(w.lat, w.lon, j.lat, j.lon) for w in workers] for j in jobs])
    conflicts = _conflicts(jobs, buffer)
    slots = [max(1, _most_disjoint([i for i in range(len(jobs)) if feasible[i, w]], jobs,
                                   conflicts)) for w in range(len(workers))]
    columns = [w for w in range(len(workers)) for _ in range(slots[w])]
    cost = np.where(feasible[:, columns], km[:, columns], INFEASIBLE)
    rows, cols = linear_sum_assignment(cost)
    choice = [0] * len(jobs)
    for job, col in zip(rows, cols, strict=True):
        choice[job] = columns[col]
    if not _clashes(choice, conflicts):
        return Optimum(float(np.mean([km[j, w] for j, w in enumerate(choice)])), tuple(choice),
                       "assignment")
    exact = _integer_program(jobs, feasible, km, conflicts, buffer, time_limit_s)
    if exact is None:  # the solver gave up: say so rather than pass a bound off as the optimum
        return Optimum(float(np.mean([km[j, w] for j, w in enumerate(choice)])), tuple(choice),
                       "lower bound")
    return Optimum(float(np.mean([km[j, w] for j, w in enumerate(exact)])), tuple(exact),
                   "integer program")


def _qualified(worker: Worker, job: Job) -> bool:
    return job.district in worker.districts and set(job.skills) <= set(worker.skills)


def _conflicts(jobs: Sequence[Job], buffer: timedelta) -> list[set[int]]:
    """For each job, the jobs one carer could not also hold (overlap with the buffer)."""
    out: list[set[int]] = [set() for _ in jobs]
    for i, a in enumerate(jobs):
        for k in range(i + 1, len(jobs)):
            b = jobs[k]
            if a.start < b.end + buffer and b.start < a.end + buffer:
                out[i].add(k)
                out[k].add(i)
    return out


def _most_disjoint(candidates: list[int], jobs: Sequence[Job],
                   conflicts: list[set[int]]) -> int:
    """How many of these jobs one carer could hold at most (earliest end first is optimal
    for intervals)."""
    taken: list[int] = []
    for i in sorted(candidates, key=lambda i: (jobs[i].end, jobs[i].start)):
        if not any(t in conflicts[i] for t in taken):
            taken.append(i)
    return len(taken)


def _clashes(choice: list[int], conflicts: list[set[int]]) -> bool:
    return any(choice[i] == choice[k] for i, others in enumerate(conflicts) for k in others)


def _integer_program(jobs: Sequence[Job], feasible: np.ndarray, km: np.ndarray,
                     conflicts: list[set[int]], buffer: timedelta,
                     time_limit_s: float) -> list[int] | None:
    pairs = [(j, w) for j in range(len(jobs)) for w in range(feasible.shape[1]) if feasible[j, w]]
    index = {pair: v for v, pair in enumerate(pairs)}
    cost = np.array([km[j, w] for j, w in pairs])
    rows: list[list[int]] = [[index[(j, w)] for w in range(feasible.shape[1]) if feasible[j, w]]
                             for j in range(len(jobs))]
    n_jobs = len(rows)
    # Jobs widened by half the buffer at each end overlap exactly when they conflict, so at
    # every job's widened start the jobs covering that moment form a clique: ≤ 1 per carer.
    half = buffer / 2
    for w in range(feasible.shape[1]):
        mine = [j for j in range(len(jobs)) if feasible[j, w]]
        seen: set[frozenset[int]] = set()
        for j in mine:
            moment = jobs[j].start - half
            clique = frozenset(k for k in mine
                               if jobs[k].start - half <= moment < jobs[k].end + half)
            if len(clique) > 1 and clique not in seen:
                seen.add(clique)
                rows.append([index[(k, w)] for k in clique])
    matrix = lil_matrix((len(rows), len(pairs)))
    for r, variables in enumerate(rows):
        for v in variables:
            matrix[r, v] = 1
    lower = np.array([1.0] * n_jobs + [0.0] * (len(rows) - n_jobs))
    upper = np.ones(len(rows))
    result = milp(cost, constraints=LinearConstraint(matrix.tocsr(), lower, upper),
                  integrality=np.ones(len(pairs)), bounds=Bounds(0, 1),
                  options={"time_limit": time_limit_s})
    if result.x is None or result.status not in (0,):
        return None
    choice = [0] * len(jobs)
    for v, (j, w) in enumerate(pairs):
        if result.x[v] > 0.5:
            choice[j] = w
    return choice
