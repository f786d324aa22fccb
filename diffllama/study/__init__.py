"""Studies: the Differential Transformer paper's Table 3 (attention to answer vs noise, in every
reading, by answer depth and context length, per layer) and Table 5 (activation outliers) over a
dataset, for any set of models, next to whether each model found the answer, with 95 % bootstrap
confidence intervals. Also under ``accelerate launch``: examples are split across processes and the
results gathered, equal to a one-process run. Memory is bounded by one example's trace.

    python -m diffllama.study diffllama-lm llama-lm persimmon-lm --examples 200 --fillers 4 16
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import gather_object

from ..analysis import READINGS, MagnitudeSummary
from ..records import OutlierStats
from .examples import DEPTHS, Example, read_jsonl, retrieval_examples
from .measure import Measured, measure, refine
from .statistics import RESAMPLES, bootstrap, breakdown

__all__ = ["DEPTHS", "Example", "read_jsonl", "retrieval_examples", "run_study"]
OUTLIER_FIELDS = tuple(OutlierStats.__dataclass_fields__)


def run_study(models: dict, examples: list[Example], depths: tuple[float, ...] = DEPTHS, resamples: int = RESAMPLES,
              progress: Callable[[float, str], None] | None = None) -> dict:
    """Measure every example with every model (``{name: LensModel}``) and summarise; every process
    of an ``accelerate launch`` returns the same result."""
    if not examples:
        raise ValueError("a study needs at least one example")
    state = PartialState(cpu=not torch.cuda.is_available())  # on CPU, several processes talk over gloo
    with state.split_between_processes(list(range(len(examples)))) as part:
        mine = list(part)
    steps, done = 2 * len(models) * max(len(mine), 1), 0
    result = {"examples": len(examples), "depths": list(depths), "processes": state.num_processes, "models": {}}
    for name, lens in models.items():
        local = {field: MagnitudeSummary() for field in OUTLIER_FIELDS}
        measured = []
        for index in mine:
            measured.append(measure(lens, examples[index], index, local))
            done += 1
            if progress and state.is_main_process:
                progress(done / steps, f"{name}: example {len(measured)} of {len(mine)}")
        rows = sorted(gather_object(measured), key=lambda row: row.index)
        summaries = {field: MagnitudeSummary.merged(gather_object([local[field]])) for field in OUTLIER_FIELDS}
        for index in mine:  # pass 2 of the exact median, with the whole set's first-pass counts
            refine(lens, examples[index], summaries)
            done += 1
            if progress and state.is_main_process:
                progress(done / steps, f"{name}: activation outliers, second pass")
        for summary in summaries.values():
            summary.fine = sum(gather_object([summary.fine]))
        result["models"][name] = summarise(lens, rows, summaries, depths, resamples)
    return result


def _mean(values: list[float]) -> float:
    return float(np.mean(values))


def summarise(lens, rows: list[Measured], summaries: dict[str, MagnitudeSummary], depths: tuple[float, ...],
              resamples: int) -> dict:
    layers = len(rows[0].answer[READINGS[0]])

    def allocation(which: str, reading: str) -> dict:
        value = lambda row: _mean(getattr(row, which)[reading])  # noqa: E731 - mean over layers (and heads)
        by_layer = [bootstrap((getattr(row, which)[reading][layer] for row in rows), resamples) for layer in range(layers)]
        return {**breakdown(rows, value, depths, resamples), "by_layer": by_layer}

    return {
        "source": lens.source, "arch": lens.arch, "task": lens.task, "map": lens.architecture.kinds[0],
        "examples": len(rows),
        "found_answer": {"measure": "QA exact match" if lens.task == "qa" else "retrieval accuracy",
                         **breakdown(rows, lambda row: float(row.found), depths, resamples)},
        "allocation": {reading: {"answer": allocation("answer", reading), "noise": allocation("noise", reading)}
                       for reading in READINGS},
        "sinks": {kind: {"share": bootstrap((row.sink_share[kind] for row in rows), resamples),
                         "score": bootstrap((row.sink_score[kind] for row in rows), resamples)}
                  for kind in rows[0].sink_share},
        "outliers": {field: {**summary.as_row(), "values": summary.count} for field, summary in summaries.items()},
        "per_example": [{"index": row.index, "depth": row.depth, "tokens": row.tokens, "found": row.found,
                         "answer": {r: _mean(row.answer[r]) for r in READINGS},
                         "noise": {r: _mean(row.noise[r]) for r in READINGS}} for row in rows],
    }
