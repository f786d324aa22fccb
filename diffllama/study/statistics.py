"""Means with 95 % percentile-bootstrap confidence intervals, overall and by group."""

from __future__ import annotations

import math
from typing import Callable, Iterable

import numpy as np

RESAMPLES = 2000
DRAWS_AT_ONCE = 1_000_000  # bounds the resampling index array


def bootstrap(values: Iterable[float], resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """``{"mean", "low", "high", "n"}``: the mean of ``values`` and the 2.5th / 97.5th percentiles of the
    means of ``resamples`` resamples with replacement (seeded, so a study's output is reproducible)."""
    values = np.asarray(list(values), dtype=float)
    n = len(values)
    if n == 0:
        return {"mean": None, "low": None, "high": None, "n": 0}
    rng = np.random.default_rng(seed)
    per_block = max(1, DRAWS_AT_ONCE // n)
    means = np.concatenate([values[rng.integers(0, n, (min(per_block, resamples - done), n))].mean(axis=1)
                            for done in range(0, resamples, per_block)])
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean": float(values.mean()), "low": float(low), "high": float(high), "n": n}


def length_group(tokens: int) -> str:
    """Context lengths are grouped by the power of two at or above the input's token count."""
    return f"≤{2 ** math.ceil(math.log2(max(tokens, 1)))} tokens"


def nearest_depth(depth: float, depths: tuple[float, ...]) -> str:
    return f"{min(depths, key=lambda d: abs(d - depth)):g}"


def grouped(rows: list, value: Callable, key: Callable, resamples: int) -> dict[str, dict]:
    """``bootstrap`` of ``value(row)`` for each ``key(row)``, groups in the order of their first row
    after sorting by key."""
    groups: dict[str, list[float]] = {}
    for row in sorted(rows, key=lambda r: _order(key(r))):
        groups.setdefault(key(row), []).append(value(row))
    return {name: bootstrap(values, resamples) for name, values in groups.items()}


def _order(label: str) -> float:
    """Groups sort by the number in their label ("0.25", "≤512 tokens")."""
    return float(label.lstrip("≤").split()[0])


def breakdown(rows: list, value: Callable, depths: tuple[float, ...], resamples: int) -> dict:
    """Overall, by answer depth and by context length."""
    return {"overall": bootstrap((value(r) for r in rows), resamples),
            "by_depth": grouped(rows, value, lambda r: nearest_depth(r.depth, depths), resamples),
            "by_length": grouped(rows, value, lambda r: length_group(r.tokens), resamples)}
