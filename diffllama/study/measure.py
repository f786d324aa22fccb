"""One example through one model: the trace, allocation on the gold answer in every reading, sink
scores, whether the model found the answer, and its values fed to the Table 5 summaries. Only
small numbers leave this module, so a study holds one example's trace at a time."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import analysis
from ..records import ReferenceSpan
from ..trace import Trace
from .examples import Example

TASKS = ("generation", "qa")


@dataclass
class Measured:
    """One example's numbers for one model (what processes send to each other)."""

    index: int
    depth: float
    tokens: int  # length of the model's input
    found: bool  # greedy continuation starts with the answer (LM) / best span equals it (QA)
    answer: dict[str, list[float]]  # reading -> attention to answer per layer (mean over heads)
    noise: dict[str, list[float]]  # reading -> attention noise per layer
    sink_share: dict[str, float]  # map kind -> share of layer × head maps above ε
    sink_score: dict[str, float]  # map kind -> mean sink score over layers × heads


def prompt(example: Example) -> str:
    """A language model reads the context, the question and the answer's lead-in, if any; the answer
    should come next."""
    return " ".join(part for part in (example.context, example.question, example.lead_in) if part)


def model_input(lens, example: Example) -> tuple[Trace, ReferenceSpan, tuple[int, int] | None]:
    """The trace of what the model reads, the gold answer in it, and the context's characters
    (None: the whole sequence holding the answer)."""
    if lens.task not in TASKS:
        raise ValueError(f"{lens.source} is a {lens.task} model; a study needs a language model or a QA model")
    if lens.task == "qa":  # the question is the first sequence, the context the second
        trace = lens.trace(example.question, example.context)
        context = None
    else:
        trace = lens.trace(prompt(example))
        context = (0, len(example.context))
    if trace.truncated_from:
        raise ValueError(f"an input has {trace.truncated_from} tokens, more than {lens.source}'s {trace.seq_len} "
                         "positions: use fewer filler sentences or shorter contexts")
    reference = ReferenceSpan(example.answer_start, example.answer_end, 1 if lens.task == "qa" else 0, "gold answer")
    return trace, reference, context


def found_answer(lens, example: Example, trace: Trace, answer_tokens: int) -> bool:
    """Retrieval accuracy (greedy continuation of the prompt) or QA exact match, for one example."""
    if lens.task == "qa":
        spans = lens.answer(example.question, example.context, top_k=1).spans
        return bool(spans) and spans[0].text.strip() == example.answer
    pad = lens.config.pad_token_id if lens.config.pad_token_id is not None else lens.tokenizer.eos_token_id
    ids = torch.tensor([trace.input_ids], device=lens.device)
    with torch.no_grad():  # a space piece and the answer's tokens, and one more
        output = lens.model.generate(ids, max_new_tokens=answer_tokens + 2, do_sample=False, pad_token_id=pad)
    return lens.tokenizer.decode(output[0, ids.shape[1]:].tolist(), skip_special_tokens=True).strip().startswith(example.answer)


def measure(lens, example: Example, index: int, summaries: dict[str, analysis.MagnitudeSummary]) -> Measured:
    """Everything the study reports for one example; its Table 5 values go into ``summaries`` (pass 1)."""
    trace, reference, context = model_input(lens, example)
    allocation = analysis.reference_allocation(trace, reference, context)
    sinks = analysis.sink_scores(trace)
    for name, stream in analysis.outlier_streams(trace).items():
        for chunk in stream():
            summaries[name].add(chunk)
    return Measured(
        index=index, depth=example.depth, tokens=trace.seq_len,
        found=found_answer(lens, example, trace, allocation.answer[1] - allocation.answer[0]),
        answer={r: allocation.answer_mass[r].mean(axis=1).tolist() for r in analysis.READINGS},
        noise={r: allocation.noise_mass[r].mean(axis=1).tolist() for r in analysis.READINGS},
        sink_share={kind: sinks.share_above(kind) for kind in sinks.scores},
        sink_score={kind: float(scores.mean()) for kind, scores in sinks.scores.items()})


def refine(lens, example: Example, summaries: dict[str, analysis.MagnitudeSummary]) -> None:
    """Pass 2 of the Table 5 summaries: the same values again, for the exact median."""
    trace, _, _ = model_input(lens, example)
    for name, stream in analysis.outlier_streams(trace).items():
        for chunk in stream():
            summaries[name].add_fine(chunk)
