"""Results derived from a whole trace that several views read again — the comparison's head
statistics and sink scores, the overview, the activation outliers — computed once per trace and kept
with it in its cache (counted against the cache's bound), under typed keys. Callers ask for the
result; the keys and sizes stay here."""

from __future__ import annotations

from dataclasses import dataclass

from ..records import HeadStats, OutlierStats, Overview, SinkScores
from .head_stats import head_stats
from .maps import overview as compute_overview
from .outliers import activation_outliers
from .sinks import sink_scores


@dataclass(frozen=True)
class ComparisonKey:
    kind: str  # the trace's main map kind, whose rows the statistics read


@dataclass(frozen=True)
class OverviewKey:
    kind: str
    size: int  # blocks per side of each thumbnail
    value: str  # weights or contributions (``records.VALUES``)


@dataclass(frozen=True)
class OutliersKey:
    pass


@dataclass
class Comparison:
    """One model's numbers for an A vs B comparison, from one pass over its maps."""

    stats: HeadStats
    sinks: SinkScores


SMALL = 0  # bytes counted for a result of a few arrays [layers, heads]: a few kB, never what makes room


def comparison(trace) -> Comparison:
    """Head statistics of the trace's main map and sink scores of every map."""
    def measure() -> Comparison:
        return Comparison(head_stats(trace, trace.kinds[0]), sink_scores(trace))
    return trace.cache.get(ComparisonKey(trace.kinds[0]), measure, lambda _: SMALL)


def overview(trace, kind: str, size: int, value: str = "weight") -> Overview:
    """Every layer × head of ``kind`` pooled to ``size`` blocks a side, with its statistics; kept, so
    another measure or order of the same thumbnails costs nothing."""
    return trace.cache.get(OverviewKey(kind, size, value), lambda: compute_overview(trace, kind, size=size, value=value),
                           lambda kept: sum(m.nbytes for row in kept.maps for m in row))


def outliers(trace) -> OutlierStats:
    """The exact activation outliers (its own pass over every logit and hidden state)."""
    return trace.cache.get(OutliersKey(), lambda: activation_outliers(trace), lambda _: SMALL)
