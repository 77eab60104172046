"""Exemplar memory for replay: choose a fixed number of multi-label clips of the old classes.

The TASLP paper selects exemplars "from the multi-label data by simulated annealing" but does not
publish its objective or memory budget. This module states its own objective and optimises it.

Setting
-------
``labels`` is the ``(n_clips, n_classes)`` 0/1 matrix of the old classes' training clips (the
pool) and ``budget`` = B the number of clips the memory may hold. For a selection S of B clips the
per-class exemplar counts are ``c_k = sum_{i in S} labels[i, k]``. One clip adds to every class it
is labelled with, so the counts of different classes cannot be chosen independently: this is a
combinatorial subset problem, not per-class sampling.

Objective (smaller is better)
-----------------------------
Only the *available* classes A = {k : a_k > 0} take part, where ``a_k = labels[:, k].sum()`` is
the number of pool clips labelled k (a class without a clip cannot be covered and is ignored).

1. Ideal label mass. A memory of B clips is expected to carry ``L = B * mean labels per pool
   clip`` labels (``L = B * sum_k a_k / n_clips``).
2. Ideal, achievable counts ("as even as the budget allows"): spread L evenly over A by
   water-filling, ``t_k = min(a_k, tau)`` with tau chosen so that ``sum_{k in A} t_k = L``
   (``t_k = a_k`` for all k when ``L >= sum a_k``). A class with fewer pool clips than the level
   tau should receive all of them; the others share the rest equally.
3. Imbalance: the squared deviation ``D = sum_{k in A} (c_k - t_k)^2``. Because the targets sum
   to the expected label mass L, the objective neither rewards filling the memory with clips
   that carry few labels nor with clips that carry many.
4. Coverage: ``Z = #{k in A : c_k = 0}``, the number of old classes left with no exemplar at all
   (their replay signal would be nothing), weighted by a penalty P.

    J(S) = sum_{k in A} (c_k - t_k)^2  +  P * #{k in A : c_k = 0}

By default ``P = 1 + sum_{k in A} a_k^2``, which exceeds any possible value of D (both c_k and
t_k lie in [0, a_k]), so the order is lexicographic: first cover as many old classes as the budget
allows, then make the counts as even as possible. :func:`balance_objective` computes J from a
count vector.

Optimiser
---------
:func:`select_annealing` runs simulated annealing over subsets of exactly B clips. It starts from
a coverage-seeded subset (rarest class first, one random clip per still uncovered class, the rest
random) or a uniformly random one, proposes swapping one chosen clip for one unchosen clip, and
updates the counts, D and Z incrementally from the two clips' label lists only (O(labels per
clip) per proposal; nothing is recomputed over the whole memory). A proposal with change dJ is
accepted with the Metropolis probability ``min(1, exp(-dJ / T))`` at a geometrically cooling
temperature ``T_s = t0 * (t_end / t0) ** (s / (steps - 1))``; the best subset seen is returned.
All randomness comes from one ``numpy.random.default_rng(seed)``, so a run is deterministic for a
given seed as long as the step bound (not the optional time limit) ends it.

:func:`select_random` (uniform sampling without replacement) is the baseline.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Callable, NamedTuple

import numpy as np

__all__ = [
    "validate_labels",
    "check_budget",
    "balance_targets",
    "default_zero_penalty",
    "balance_objective",
    "label_histogram",
    "select_random",
    "AnnealResult",
    "anneal_exemplars",
    "select_annealing",
    "select_exemplars",
    "SELECTORS",
    "register_selector",
    "SelectionReport",
    "selection_report",
]

log = logging.getLogger(__name__)

_CHUNK = 1 << 16  # random numbers drawn per block of proposals


# --------------------------------------------------------------------------------------------
# Validation and objective
# --------------------------------------------------------------------------------------------


def validate_labels(labels: np.ndarray) -> np.ndarray:
    """Check a multi-label matrix and return it as int64 0/1 ``(n_clips, n_classes)``.

    Raises ``ValueError`` if it is not 2-D, has no clip or no class, or holds values other than 0
    and 1 (booleans are accepted).
    """
    y = np.asarray(labels)
    if y.ndim != 2:
        raise ValueError(f"labels must be 2-D (n_clips, n_classes); got shape {y.shape}")
    if y.shape[0] == 0 or y.shape[1] == 0:
        raise ValueError(f"labels must have at least one clip and one class; got shape {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must contain only 0 and 1")
    return y.astype(np.int64)


def check_budget(budget: int) -> int:
    """``budget`` as a positive int (every selector checks its budget with this)."""
    if isinstance(budget, bool) or int(budget) != budget:
        raise ValueError(f"budget must be an integer; got {budget!r}")
    budget = int(budget)
    if budget <= 0:
        raise ValueError(f"budget must be positive; got {budget}")
    return budget


def balance_targets(available: np.ndarray, label_total: float) -> np.ndarray:
    """Water-filled ideal per-class counts ``t_k = min(a_k, tau)`` with ``sum t_k = label_total``.

    ``available`` (n_classes,) holds ``a_k``, the number of pool clips labelled with class k.
    Classes with ``a_k = 0`` get target 0. If ``label_total >= sum a_k`` every class gets
    ``t_k = a_k``. Returns float64 (n_classes,).
    """
    a = np.asarray(available, dtype=np.float64)
    if a.ndim != 1 or (a < 0).any():
        raise ValueError("available must be a 1-D array of non-negative counts")
    if label_total < 0:
        raise ValueError(f"label_total must be non-negative; got {label_total}")
    if label_total >= a.sum():
        return a.copy()
    order = np.sort(a[a > 0])  # ascending availabilities of the available classes
    remaining = float(label_total)
    n_left = order.size
    tau = 0.0
    for value in order:
        # Can every remaining class reach `value`? If not, the level lies below it.
        if value * n_left >= remaining:
            tau = remaining / n_left
            break
        remaining -= value  # this class is saturated at its availability
        n_left -= 1
    return np.minimum(a, tau)


def default_zero_penalty(available: np.ndarray) -> float:
    """``1 + sum_k a_k^2``: larger than any possible squared deviation, so coverage comes first."""
    a = np.asarray(available, dtype=np.float64)
    return 1.0 + float((a * a).sum())


def balance_objective(
    counts: np.ndarray,
    available: np.ndarray,
    *,
    label_total: float | None = None,
    zero_penalty: float | None = None,
) -> float:
    """Imbalance J of a memory with per-class exemplar counts ``counts`` (smaller is better).

    ``J = sum_{k: a_k > 0} (c_k - t_k)^2 + P * #{k : a_k > 0 and c_k = 0}``

    - ``counts`` (n_classes,): ``c_k``, exemplars of class k in the memory (label counts, a clip
      with several labels counts once for each of them).
    - ``available`` (n_classes,): ``a_k``, pool clips labelled k (``labels.sum(0)`` of the pool).
      Classes with ``a_k = 0`` are ignored.
    - ``label_total``: L, the label mass the targets ``t_k`` (:func:`balance_targets`) are
      water-filled to. The selectors use ``budget * a.sum() / n_clips`` (the expected label mass
      of a memory of ``budget`` clips); when omitted, ``counts.sum()`` (the memory's own mass).
    - ``zero_penalty``: P, default :func:`default_zero_penalty` (lexicographic coverage first).
    """
    c = np.asarray(counts, dtype=np.float64)
    a = np.asarray(available, dtype=np.float64)
    if c.shape != a.shape or c.ndim != 1:
        raise ValueError(f"counts and available must be 1-D of the same length; got {c.shape}, {a.shape}")
    if (c < 0).any() or (c > a).any():
        raise ValueError("counts must lie between 0 and the available clips of each class")
    if label_total is None:
        label_total = float(c.sum())
    if zero_penalty is None:
        zero_penalty = default_zero_penalty(a)
    t = balance_targets(a, label_total)
    active = a > 0
    deviation = float(((c[active] - t[active]) ** 2).sum())
    uncovered = int((c[active] == 0).sum())
    return deviation + zero_penalty * uncovered


def label_histogram(labels: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Per-class exemplar counts (n_classes,) int64 of the clips ``indices`` of ``labels``."""
    y = validate_labels(labels)
    idx = np.asarray(indices, dtype=np.int64)
    return y[idx].sum(axis=0)


def _expected_label_total(y: np.ndarray, budget: int) -> float:
    """L = budget * mean number of labels per pool clip."""
    return budget * float(y.sum()) / y.shape[0]


# --------------------------------------------------------------------------------------------
# Selectors
# --------------------------------------------------------------------------------------------


def select_random(labels: np.ndarray, budget: int, *, seed: int) -> np.ndarray:
    """Baseline: ``budget`` clips drawn uniformly without replacement; sorted int64 indices.

    ``budget >= n_clips`` returns every clip.
    """
    y = validate_labels(labels)
    budget = check_budget(budget)
    n = y.shape[0]
    if budget >= n:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=budget, replace=False)).astype(np.int64)


@dataclass(frozen=True)
class AnnealResult:
    """Outcome of :func:`anneal_exemplars`.

    ``indices`` sorted (budget,) int64; ``counts`` (n_classes,) the per-class exemplar counts kept
    incrementally during the search (equal to ``labels[indices].sum(0)``); ``objective`` J of the
    returned set (recomputed from ``counts`` with :func:`balance_objective`);
    ``tracked_objective`` the same J as accumulated from the per-proposal changes (equal to
    ``objective`` up to rounding); ``initial_objective``
    J of the starting subset; ``steps`` proposals made; ``accepted`` proposals accepted;
    ``best_step`` the proposal after which the best subset was reached (0: the start);
    ``t0`` / ``t_end`` the temperatures used; ``seconds`` wall time; ``stopped_by_time`` whether
    ``time_limit_s`` ended the run before ``steps`` proposals.
    """

    indices: np.ndarray
    counts: np.ndarray
    objective: float
    tracked_objective: float
    initial_objective: float
    steps: int
    accepted: int
    best_step: int
    t0: float
    t_end: float
    seconds: float
    stopped_by_time: bool


def _initial_subset(y: np.ndarray, budget: int, rng: np.random.Generator, init: str) -> np.ndarray:
    """Starting subset (budget,) of clip indices, unsorted."""
    n = y.shape[0]
    if init == "random":
        return rng.choice(n, size=budget, replace=False)
    if init != "cover":
        raise ValueError(f"init must be 'cover' or 'random'; got {init!r}")
    chosen = np.zeros(n, dtype=bool)
    covered = np.zeros(y.shape[1], dtype=bool)
    available = y.sum(axis=0)
    picked: list[int] = []
    for k in np.argsort(available, kind="stable"):  # rarest class first
        if len(picked) >= budget:
            break
        if available[k] == 0 or covered[k]:
            continue
        candidates = np.flatnonzero((y[:, k] == 1) & ~chosen)
        i = int(candidates[rng.integers(candidates.size)])
        chosen[i] = True
        covered |= y[i] == 1
        picked.append(i)
    rest = np.flatnonzero(~chosen)
    fill = rng.choice(rest, size=budget - len(picked), replace=False)
    return np.concatenate([np.asarray(picked, dtype=np.int64), fill.astype(np.int64)])


def anneal_exemplars(
    labels: np.ndarray,
    budget: int,
    *,
    seed: int,
    steps: int = 200_000,
    t0: float | None = None,
    t_end: float | None = None,
    time_limit_s: float | None = None,
    init: str = "cover",
    zero_penalty: float | None = None,
) -> AnnealResult:
    """Simulated annealing over subsets of exactly ``budget`` clips minimising J (module doc).

    - ``steps``: number of swap proposals (the bound on the work; >= 1).
    - ``t0`` / ``t_end``: start / end temperature in objective units (squared counts). The
      temperature cools geometrically from t0 to t_end over ``steps``. ``t0=None`` calibrates it
      to a tenth of the mean increase of J's deviation part over up to 256 random uphill
      proposals from the start, at least 1 (the start is far from balanced, so its typical moves
      are much larger than those that matter near the optimum). ``t_end=None`` is
      ``min(0.05, t0)``: an end move that worsens J by 1 (the typical smallest change, counts
      being integers) is then accepted with probability e^-20, so the run ends as a descent.
    - ``time_limit_s``: optional wall-clock bound; the run then stops early (checked every 1024
      proposals) and is no longer guaranteed to be reproducible.
    - ``init``: ``"cover"`` (one clip for each class, rarest first, then random fill) or
      ``"random"``.
    - ``zero_penalty``: P of the objective, default :func:`default_zero_penalty`.

    ``budget >= n_clips`` returns every clip without searching.
    """
    start_time = time.perf_counter()
    y = validate_labels(labels)
    budget = check_budget(budget)
    steps = _check_steps(steps, time_limit_s)
    n = y.shape[0]
    available = y.sum(axis=0)  # (n_classes,)
    label_total = _expected_label_total(y, min(budget, n))
    penalty = default_zero_penalty(available) if zero_penalty is None else float(zero_penalty)
    if penalty < 0:
        raise ValueError(f"zero_penalty must be non-negative; got {penalty}")

    if budget >= n:
        idx = np.arange(n, dtype=np.int64)
        counts = y.sum(axis=0)
        obj = balance_objective(counts, available, label_total=label_total, zero_penalty=penalty)
        return AnnealResult(idx, counts, obj, obj, obj, 0, 0, 0, 0.0, 0.0,
                            time.perf_counter() - start_time, False)

    rng = np.random.default_rng(seed)
    targets = balance_targets(available, label_total).tolist()  # t_k, (n_classes,)
    clip_labels = [tuple(np.flatnonzero(row).tolist()) for row in y]  # label indices per clip

    start = _initial_subset(y, budget, rng, init)
    in_memory = np.zeros(n, dtype=bool)
    in_memory[start] = True
    counts_arr = y[start].sum(axis=0)
    active = available > 0
    search = _Search(
        chosen=start.tolist(),  # positions 0..budget-1
        unchosen=np.flatnonzero(~in_memory).tolist(),  # positions 0..n-budget-1
        counts=counts_arr.tolist(),  # c_k as Python ints, updated in place
        clip_labels=clip_labels, targets=targets)
    deviation = float(((counts_arr[active] - np.asarray(targets)[active]) ** 2).sum())
    uncovered = int((counts_arr[active] == 0).sum())
    t0, t_end, cooling = _temperatures(search, rng, t0=t0, t_end=t_end, steps=steps)
    initial_objective = deviation + penalty * uncovered
    run = _anneal(search, rng, steps=steps, t0=t0, cooling=cooling, penalty=penalty, deviation=deviation,
                  uncovered=uncovered, time_limit_s=time_limit_s, start_time=start_time)
    search.roll_back(run.undo)

    idx = np.sort(np.asarray(search.chosen, dtype=np.int64))
    counts_out = np.asarray(search.counts, dtype=np.int64)
    objective = balance_objective(counts_out, available, label_total=label_total, zero_penalty=penalty)
    seconds = time.perf_counter() - start_time
    log.info("annealing: %d clips of %d, %d proposals (%d accepted) in %.2f s, J %.4g -> %.4g",
             budget, n, run.done, run.accepted, seconds, initial_objective, objective)
    return AnnealResult(idx, counts_out, objective, run.best, initial_objective, run.done, run.accepted,
                        run.best_step, t0, t_end, seconds, run.stopped_by_time)


def _check_steps(steps: int, time_limit_s: float | None) -> int:
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer; got {steps!r}")
    if time_limit_s is not None and time_limit_s <= 0:
        raise ValueError(f"time_limit_s must be positive; got {time_limit_s}")
    return int(steps)


@dataclass
class _Search:
    """The annealing's current subset: ``chosen`` (budget clip indices) and ``unchosen`` (the
    rest), and the per-class ``counts`` of the chosen clips, updated in place by a swap."""

    chosen: list[int]
    unchosen: list[int]
    counts: list[int]
    clip_labels: list[tuple[int, ...]]  # label indices per clip
    targets: list[float]  # t_k

    def swap_delta(self, i: int, j: int) -> tuple[float, int]:
        """Change of (D, Z) when clip i leaves and clip j enters the memory."""
        li = self.clip_labels[i]
        lj = self.clip_labels[j]
        counts, targets = self.counts, self.targets
        d_dev = 0.0
        d_zero = 0
        for k in li:
            if k not in lj:  # count drops by one: (c-1-t)^2 - (c-t)^2 = -2(c-t) + 1
                c = counts[k]
                d_dev += 1.0 - 2.0 * (c - targets[k])
                if c == 1:
                    d_zero += 1
        for k in lj:
            if k not in li:  # count rises by one: 2(c-t) + 1
                c = counts[k]
                d_dev += 1.0 + 2.0 * (c - targets[k])
                if c == 0:
                    d_zero -= 1
        return d_dev, d_zero

    def swap(self, p: int, q: int) -> None:
        """Exchange chosen position ``p`` with unchosen position ``q`` (counts only)."""
        i = self.chosen[p]
        j = self.unchosen[q]
        for k in self.clip_labels[i]:
            self.counts[k] -= 1
        for k in self.clip_labels[j]:
            self.counts[k] += 1
        self.chosen[p] = j
        self.unchosen[q] = i

    def roll_back(self, undo: list[tuple[int, int]]) -> None:
        """Undo the swaps ``undo`` (accepted after the best subset), newest first: a swap of the
        same two positions is its own inverse."""
        for p, q in reversed(undo):
            self.swap(p, q)


def _temperatures(search: _Search, rng: np.random.Generator, *, t0: float | None, t_end: float | None,
                  steps: int) -> tuple[float, float, float]:
    """``(t0, t_end, cooling)``; ``t0=None`` is calibrated from up to 256 random proposals from
    the start (the draws come from the search's generator), ``t_end=None`` is ``min(0.05, t0)``."""
    budget, n_out = len(search.chosen), len(search.unchosen)
    if t0 is None:
        n_probe = min(256, steps)
        ps = rng.integers(budget, size=n_probe)
        qs = rng.integers(n_out, size=n_probe)
        deltas = (search.swap_delta(search.chosen[p], search.unchosen[q]) for p, q in zip(ps, qs))
        ups = [d for d, _ in deltas if d > 0]
        t0 = max(1.0, 0.1 * float(np.mean(ups))) if ups else 1.0
    t0 = float(t0)
    t_end = min(0.05, t0) if t_end is None else float(t_end)
    if t0 <= 0 or t_end <= 0:
        raise ValueError(f"temperatures must be positive; got t0={t0}, t_end={t_end}")
    cooling = (t_end / t0) ** (1.0 / (steps - 1)) if steps > 1 else 1.0
    return t0, t_end, cooling


class _Run(NamedTuple):
    done: int  # proposals made
    accepted: int
    best: float  # the best J, as tracked from the changes
    best_step: int
    undo: list[tuple[int, int]]  # the swaps accepted after the best subset
    stopped_by_time: bool


def _anneal(search: _Search, rng: np.random.Generator, *, steps: int, t0: float, cooling: float, penalty: float,
            deviation: float, uncovered: int, time_limit_s: float | None, start_time: float) -> _Run:
    """The Metropolis loop: ``steps`` swap proposals at a geometrically cooling temperature, from
    the subset ``search`` whose J has the parts ``deviation`` (D) and ``uncovered`` (Z). The
    search is updated in place; its subset at the end is the last accepted one."""
    chosen, unchosen = search.chosen, search.unchosen
    swap_delta, swap = search.swap_delta, search.swap
    budget, n_out = len(chosen), len(unchosen)
    current = best = deviation + penalty * uncovered
    best_step = accepted = done = 0
    undo: list[tuple[int, int]] = []  # accepted swaps since the best subset, to roll back
    temperature = t0
    stopped_by_time = False
    exp = math.exp
    while done < steps and not stopped_by_time:
        block = min(_CHUNK, steps - done)
        ps = rng.integers(budget, size=block).tolist()
        qs = rng.integers(n_out, size=block).tolist()
        us = rng.random(block).tolist()
        for p, q, u in zip(ps, qs, us):
            done += 1
            i = chosen[p]
            j = unchosen[q]
            d_dev, d_zero = swap_delta(i, j)
            delta = d_dev + penalty * d_zero
            if delta <= 0.0 or u < exp(-delta / temperature):
                swap(p, q)
                deviation += d_dev
                uncovered += d_zero
                current = deviation + penalty * uncovered
                accepted += 1
                if current < best - 1e-9:
                    best = current
                    best_step = done
                    undo.clear()
                else:
                    undo.append((p, q))
            temperature *= cooling
            if time_limit_s is not None and (done & 1023) == 0 \
                    and time.perf_counter() - start_time > time_limit_s:
                stopped_by_time = True
                break
    return _Run(done, accepted, best, best_step, undo, stopped_by_time)


def select_annealing(labels: np.ndarray, budget: int, *, seed: int, **options) -> np.ndarray:
    """Sorted int64 indices of ``budget`` clips chosen by :func:`anneal_exemplars` (``options``:
    its keyword arguments)."""
    return anneal_exemplars(labels, budget, seed=seed, **options).indices


#: Exemplar selectors by name (the ``replay`` setting of a method): each takes the candidates'
#: ``(n_clips, n_old_classes)`` 0/1 label matrix, the budget and a seed and returns sorted int64
#: indices of ``budget`` clips. A new selector is a module that calls :func:`register_selector`
#: (e.g. :mod:`cilaudio.methods.balanced_replay`).
SELECTORS: dict[str, Callable[..., np.ndarray]] = {"random": select_random, "annealing": select_annealing}


def register_selector(name: str):
    """Decorator: add an exemplar selector ``fn(labels, budget, *, seed, **options)`` under ``name``."""
    def add(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        if name in SELECTORS and SELECTORS[name] is not fn:
            raise ValueError(f"an exemplar selector named {name!r} is registered already")
        SELECTORS[name] = fn
        return fn
    return add


def select_exemplars(labels: np.ndarray, budget: int, *, method: str, seed: int, **options) -> np.ndarray:
    """The selector ``method`` of :data:`SELECTORS` (``options`` passed on)."""
    if method not in SELECTORS:
        raise ValueError(f"unknown exemplar selector {method!r}; registered: {sorted(SELECTORS)}")
    if method == "random" and options:
        raise ValueError(f"random selection takes no options; got {sorted(options)}")
    return SELECTORS[method](labels, budget, seed=seed, **options)


# --------------------------------------------------------------------------------------------
# Summary for the report
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SelectionReport:
    """Summary of a memory. Count statistics are over the available classes (pool clips > 0).

    ``objective`` is J with ``L = n_selected * mean labels per pool clip`` and the default
    penalty, the quantity :func:`select_annealing` minimises, so random and annealed memories of
    the same size compare directly. ``deviation`` is J without the penalty term.
    """

    n_selected: int
    n_pool: int
    n_classes_available: int
    objective: float
    deviation: float
    zero_classes: int
    count_min: int
    count_max: int
    count_mean: float
    count_std: float
    label_total: int

    def to_dict(self) -> dict:
        return asdict(self)


def selection_report(labels: np.ndarray, indices: np.ndarray) -> SelectionReport:
    """:class:`SelectionReport` of the clips ``indices`` (unique) chosen from pool ``labels``."""
    y = validate_labels(labels)
    idx = np.asarray(indices, dtype=np.int64)
    if idx.ndim != 1 or idx.size == 0:
        raise ValueError("indices must be a non-empty 1-D array")
    if np.unique(idx).size != idx.size:
        raise ValueError("indices must be unique")
    counts = y[idx].sum(axis=0)
    available = y.sum(axis=0)
    active = available > 0
    label_total = _expected_label_total(y, idx.size)
    objective = balance_objective(counts, available, label_total=label_total)
    deviation = balance_objective(counts, available, label_total=label_total, zero_penalty=0.0)
    c = counts[active] if active.any() else np.zeros(1, dtype=np.int64)
    return SelectionReport(
        n_selected=int(idx.size),
        n_pool=int(y.shape[0]),
        n_classes_available=int(active.sum()),
        objective=objective,
        deviation=deviation,
        zero_classes=int((counts[active] == 0).sum()),
        count_min=int(c.min()),
        count_max=int(c.max()),
        count_mean=float(c.mean()),
        count_std=float(c.std()),
        label_total=int(counts.sum()),
    )
