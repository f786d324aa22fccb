"""Intervals a study reports (``analysis.measures``: "95 % CI", "Wilson interval", "paired difference"):
means with 95 % percentile-bootstrap intervals (flagged below ``FEW_INPUTS`` inputs), accuracies with
Wilson intervals, and paired A − B differences (paired bootstrap; Newcombe's interval for accuracies);
overall and by group, n as counted in each cell."""

from __future__ import annotations

import math
from typing import Callable, Iterable

import numpy as np

from ..analysis.measures import FEW_INPUTS

RESAMPLES = 2000
DRAWS_AT_ONCE = 1_000_000  # bounds the resampling index array
Z = 1.959963984540054  # the standard normal's 97.5th percentile


def bootstrap(values: Iterable[float | None], resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """``{"mean", "low", "high", "n", "few"}``: the mean of ``values`` and the 2.5th / 97.5th percentiles
    of the means of ``resamples`` resamples with replacement (seeded, so a study's output is
    reproducible); ``few`` when n < ``FEW_INPUTS`` (the interval is too narrow to trust). A value of
    None (a reading not defined for that input) makes the whole cell undefined: mean None."""
    values = list(values)
    n = len(values)
    if n == 0 or any(v is None or math.isnan(v) for v in values):
        return {"mean": None, "low": None, "high": None, "n": n, "few": n < FEW_INPUTS}
    values = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    per_block = max(1, DRAWS_AT_ONCE // n)
    means = np.concatenate([values[rng.integers(0, n, (min(per_block, resamples - done), n))].mean(axis=1)
                            for done in range(0, resamples, per_block)])
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean": float(values.mean()), "low": float(low), "high": float(high), "n": n, "few": n < FEW_INPUTS}


def paired(a: Iterable[float | None], b: Iterable[float | None], resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """The paired difference A − B (``bootstrap`` of the per-input differences: resampling inputs keeps
    each input's two values together)."""
    a, b = list(a), list(b)
    if len(a) != len(b):
        raise ValueError(f"a paired difference needs the same inputs for both models; got {len(a)} and {len(b)}")
    return bootstrap((None if x is None or y is None else x - y for x, y in zip(a, b)), resamples, seed)


def wilson(successes: int, n: int) -> dict:
    """``{"mean", "low", "high", "n", "few"}``: the share of successes with its 95 % Wilson score interval."""
    if n == 0:
        return {"mean": None, "low": None, "high": None, "n": 0, "few": True}
    p = successes / n
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / (1 + Z * Z / n)
    return {"mean": p, "low": max(0.0, centre - half), "high": min(1.0, centre + half), "n": n, "few": False}


def accuracy(outcomes: Iterable[float], resamples: int = RESAMPLES) -> dict:
    """A share of yes/no outcomes (1.0 / 0.0) with its Wilson interval (``resamples`` unused: the
    same signature as ``bootstrap`` for ``breakdown``)."""
    outcomes = list(outcomes)
    return wilson(int(sum(outcomes)), len(outcomes))


def paired_accuracy(pairs: Iterable[tuple[float, float]], resamples: int = RESAMPLES) -> dict:
    """The difference of two accuracies on the same inputs (``pairs`` of 1.0 / 0.0 outcomes, A's then
    B's) with Newcombe's hybrid score interval for paired proportions (1998, method 10): each accuracy's
    Wilson interval, joined with the outcomes' correlation. Unlike a bootstrap it is not [0, 0] when
    both models succeed on every input (``resamples`` unused: ``breakdown``'s signature)."""
    pairs = list(pairs)
    n = len(pairs)
    if n == 0:
        return {"mean": None, "low": None, "high": None, "n": 0, "few": True}
    both = sum(1 for x, y in pairs if x and y)
    only_a = sum(1 for x, y in pairs if x and not y)
    only_b = sum(1 for x, y in pairs if y and not x)
    neither = n - both - only_a - only_b
    a, b = wilson(both + only_a, n), wilson(both + only_b, n)
    spread = (both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither)
    phi = (both * neither - only_a * only_b) / math.sqrt(spread) if spread else 0.0
    below = math.sqrt(max(0.0, (a["mean"] - a["low"]) ** 2 - 2 * phi * (a["mean"] - a["low"]) * (b["high"] - b["mean"])
                          + (b["high"] - b["mean"]) ** 2))
    above = math.sqrt(max(0.0, (a["high"] - a["mean"]) ** 2 - 2 * phi * (a["high"] - a["mean"]) * (b["mean"] - b["low"])
                          + (b["mean"] - b["low"]) ** 2))
    difference = a["mean"] - b["mean"]
    return {"mean": difference, "low": max(-1.0, difference - below), "high": min(1.0, difference + above), "n": n, "few": False}


def length_group(tokens: int) -> str:
    """Context lengths are grouped by the power of two at or above the input's token count."""
    return f"≤{2 ** math.ceil(math.log2(max(tokens, 1)))} tokens"


def nearest_depth(depth: float, depths: tuple[float, ...]) -> str:
    return f"{min(depths, key=lambda d: abs(d - depth)):g}"


def _order(label: str) -> float:
    """Groups sort by the number in their label ("0.25", "≤512 tokens")."""
    return float(label.lstrip("≤").split()[0])


def breakdown(rows: list, value: Callable, depths: tuple[float, ...], resamples: int,
              interval: Callable = bootstrap) -> dict:
    """``interval`` (``bootstrap``, ``accuracy`` or a paired one) of ``value(row)`` overall, by answer
    depth and by context length; each cell's n is the rows it holds."""
    keys = {"by_depth": lambda r: nearest_depth(r.depth, depths), "by_length": lambda r: length_group(r.tokens)}
    result = {"overall": interval([value(r) for r in rows], resamples)}
    for name, key in keys.items():
        groups: dict[str, list] = {}
        for row in sorted(rows, key=lambda r: _order(key(r))):
            groups.setdefault(key(row), []).append(value(row))
        result[name] = {label: interval(values, resamples) for label, values in groups.items()}
    return result
