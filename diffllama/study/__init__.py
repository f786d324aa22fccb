"""Studies: the Differential Transformer paper's Table 3 (attention to answer vs noise from the query
token, in every reading, by answer depth and context length, per layer with λ beside it) and Table 5
(activation outliers) over a dataset, for any set of models, next to whether each model found the
answer (Wilson intervals), with 95 % bootstrap intervals and paired A − B differences on the same
inputs. Also under ``accelerate launch``: examples are split across processes and the results
gathered, equal to a one-process run. Memory is bounded by one example's trace.

    python -m diffllama.study diffllama-lm llama-lm persimmon-lm --examples 200 --fillers 4 16
"""

from __future__ import annotations

import itertools
from types import SimpleNamespace
from typing import Callable

import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import gather_object

from ..analysis import READINGS, MagnitudeSummary, measures
from ..records import OutlierStats
from .examples import DEPTHS, Example, read_jsonl, retrieval_examples
from .measure import Measured, measure, refine
from .statistics import RESAMPLES, accuracy, bootstrap, breakdown, paired, paired_accuracy

__all__ = ["DEPTHS", "Example", "read_jsonl", "retrieval_examples", "run_study"]
OUTLIER_FIELDS = tuple(OutlierStats.__dataclass_fields__)


def run_study(models: dict, examples: list[Example], depths: tuple[float, ...] = DEPTHS, resamples: int = RESAMPLES,
              progress: Callable[[float, str], None] | None = None, outliers: bool = True, query: int | None = None) -> dict:
    """Measure every example with every model (``{name: LensModel}``) and summarise; every process
    of an ``accelerate launch`` returns the same result. ``outliers``: Table 5 too (two more passes
    over every logit and hidden state). ``query``: the query token (``measure.query_position``; None:
    the default, the last input token)."""
    if not examples:
        raise ValueError("a study needs at least one example")
    state = PartialState(cpu=not torch.cuda.is_available())  # on CPU, several processes talk over gloo
    with state.split_between_processes(list(range(len(examples)))) as part:
        mine = list(part)
    steps, done = (2 if outliers else 1) * len(models) * max(len(mine), 1), 0
    result = {"examples": len(examples), "depths": list(depths), "processes": state.num_processes, "models": {}}
    measured_by_model = {}
    for name, lens in models.items():
        local = {field: MagnitudeSummary() for field in OUTLIER_FIELDS} if outliers else None
        measured = []
        for index in mine:
            measured.append(measure(lens, examples[index], index, local, query))
            done += 1
            if progress and state.is_main_process:
                progress(done / steps, f"{name}: example {len(measured)} of {len(mine)}")
        rows = sorted(gather_object(measured), key=lambda row: row.index)
        summaries = None
        if outliers:
            summaries = {field: MagnitudeSummary.merged(gather_object([local[field]])) for field in OUTLIER_FIELDS}
            for index in mine:  # pass 2 of the exact median, with the whole set's first-pass counts
                refine(lens, examples[index], summaries)
                done += 1
                if progress and state.is_main_process:
                    progress(done / steps, f"{name}: activation outliers, second pass")
            for summary in summaries.values():
                summary.fine = sum(gather_object([summary.fine]))
        measured_by_model[name] = rows
        result["models"][name] = summarise(lens, rows, summaries, depths, resamples, query)
    result["paired"] = {f"{a} − {b}": compare(measured_by_model[a], measured_by_model[b], depths, resamples)
                        for a, b in itertools.combinations(models, 2)}
    return result


def _mean(values: list[float | None]) -> float | None:
    """The mean over layers; None when a layer's value is (a reading that layer does not define)."""
    return None if any(v is None for v in values) else float(np.mean(values))


def regimes(lambdas: list[float] | None) -> list[dict] | None:
    """Per layer λ, 1 − λ, regime and its note, as the tables show them."""
    if lambdas is None:
        return None
    return [{"layer": layer, "lambda": value, "row_sum": 1 - value, "regime": measures.regime(value),
             "note": measures.REGIME_NOTES[measures.regime(value)], "normalised": measures.normalised_defined(value)}
            for layer, value in enumerate(lambdas)]


def summarise(lens, rows: list[Measured], summaries: dict[str, MagnitudeSummary] | None, depths: tuple[float, ...],
              resamples: int, query: int | None = None) -> dict:
    layers = len(rows[0].answer[READINGS[0]])

    def allocation(which: str, reading: str) -> dict:
        value = lambda row: _mean(getattr(row, which)[reading])  # noqa: E731 - mean over layers (and heads)
        by_layer = [bootstrap((getattr(row, which)[reading][layer] for row in rows), resamples) for layer in range(layers)]
        return {**breakdown(rows, value, depths, resamples), "by_layer": by_layer}

    return {
        "source": lens.source, "arch": lens.arch, "task": lens.task, "map": lens.architecture.kinds[0],
        "examples": len(rows), "layers": layers, "lambdas": regimes(rows[0].lambdas),
        "query": ("the last input token (the last prompt token for a language model)" if query is None else
                  f"chosen: position {query}" + (" counted from the end" if query < 0 else "")),
        "found_answer": {"measure": "QA exact match" if lens.task == "qa" else "retrieval accuracy",
                         **breakdown(rows, lambda row: float(row.found), depths, resamples, accuracy)},
        "allocation": {reading: {"answer": allocation("answer", reading), "noise": allocation("noise", reading)}
                       for reading in READINGS},
        "sinks": {kind: {"window": sorted({row.sink_window for row in rows}),
                         "share": bootstrap((float(np.mean(row.sink_share[kind])) for row in rows), resamples),
                         "score": bootstrap((float(np.mean(row.sink_score[kind])) for row in rows), resamples),
                         "by_layer": [{"share": bootstrap((row.sink_share[kind][layer] for row in rows), resamples),
                                       "score": bootstrap((row.sink_score[kind][layer] for row in rows), resamples)}
                                      for layer in range(layers)]}
                  for kind in rows[0].sink_share},
        "outliers": ({field: {**summary.as_row(), "values": summary.count} for field, summary in summaries.items()}
                     if summaries is not None else None),
        "per_example": [{"index": row.index, "depth": row.depth, "tokens": row.tokens, "found": row.found, "said": row.said,
                         "query": row.query, "answer": {r: _mean(row.answer[r]) for r in READINGS},
                         "noise": {r: _mean(row.noise[r]) for r in READINGS}} for row in rows],
    }


def compare(a: list[Measured], b: list[Measured], depths: tuple[float, ...], resamples: int) -> dict:
    """Paired differences A − B on the same inputs: found answer (``statistics.paired_accuracy``), and
    attention to answer and noise in every reading (``statistics.paired``), overall, by depth and length
    (A's token count) and per layer."""
    if [row.index for row in a] != [row.index for row in b]:
        raise ValueError("a paired difference needs both models measured on the same inputs")
    both = [SimpleNamespace(depth=x.depth, tokens=x.tokens, x=x, y=y) for x, y in zip(a, b)]  # grouped by A's depth, length
    differences = lambda values, resamples: paired([v[0] for v in values], [v[1] for v in values], resamples)  # noqa: E731
    layers = len(a[0].answer[READINGS[0]]) if len(a[0].answer[READINGS[0]]) == len(b[0].answer[READINGS[0]]) else 0

    def allocation(which: str, reading: str) -> dict:
        value = lambda p: (_mean(getattr(p.x, which)[reading]), _mean(getattr(p.y, which)[reading]))  # noqa: E731
        by_layer = [paired([getattr(p.x, which)[reading][layer] for p in both],
                           [getattr(p.y, which)[reading][layer] for p in both], resamples) for layer in range(layers)]
        return {**breakdown(both, value, depths, resamples, differences), "by_layer": by_layer}

    return {"found_answer": breakdown(both, lambda p: (float(p.x.found), float(p.y.found)), depths, resamples, paired_accuracy),
            "allocation": {reading: {"answer": allocation("answer", reading), "noise": allocation("noise", reading)}
                           for reading in READINGS}}
