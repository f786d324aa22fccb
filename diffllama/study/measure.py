"""One example through one model: the trace, allocation on the gold answer in every reading, sink
scores, whether the model found the answer, and its values fed to the Table 5 summaries. Only
small numbers leave this module, so a study holds one example's trace at a time."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

from .. import analysis
from ..records import ReferenceSpan
from ..trace import Trace
from .examples import Example

TASKS = ("generation", "qa")
NUMBER = re.compile(r"\d+")


@dataclass
class Measured:
    """One example's numbers for one model (what processes send to each other). A reading a layer does
    not define (``SpanAllocation.gaps``) is None."""

    index: int
    depth: float
    tokens: int  # length of the model's input
    found: bool  # the continuation's first number equals the answer (LM) / best span equals it (QA)
    said: str  # the continuation (LM) or best span (QA) that ``found`` judged
    query: int  # the query token's position (analysis.measures: "query token")
    answer: dict[str, list[float | None]]  # reading -> attention to answer per layer (mean over heads)
    noise: dict[str, list[float | None]]  # reading -> attention noise per layer
    sink_share: dict[str, list[float]]  # map kind -> per layer, share of heads above ε
    sink_score: dict[str, list[float]]  # map kind -> per layer, mean sink score over heads
    sink_window: int  # T of the sink scores
    lambdas: list[float] | None  # DiffLlama: λ per layer (the model's, the same for every example)


def prompt(example: Example) -> str:
    """A language model reads the context, the question and the answer's lead-in, if any; the answer
    should come next."""
    return " ".join(part for part in (example.context, example.question, example.lead_in) if part)


STUDY_INPUT = "study input"  # how a refusal names an input too long for the model (``LensModel.check_input``)


def model_input(lens, example: Example) -> tuple[Trace, ReferenceSpan, tuple[int, int] | None]:
    """The trace of what the model reads, the gold answer in it, and the context's characters
    (None: a QA input's whole context sequence)."""
    if lens.task not in TASKS:
        raise ValueError(f"{lens.source} is a {lens.task} model; a study needs a language model or a QA model")
    if lens.task == "qa":  # the question is the first sequence, the context the second
        trace = lens.trace(example.question, example.context, STUDY_INPUT)
        context = None
    else:
        trace = lens.trace(prompt(example), what=STUDY_INPUT)
        context = (0, len(example.context))
    reference = ReferenceSpan(example.answer_start, example.answer_end, 1 if lens.task == "qa" else 0, "gold answer")
    return trace, reference, context


def retrieved(continuation: str, answer: str) -> bool:
    """Retrieval accuracy's test (``analysis.measures``): a numeric answer must equal the continuation's
    first number ("48213" is not "4821"); another answer must start the continuation and end at a word
    boundary."""
    answer, continuation = answer.strip(), continuation.strip()
    if NUMBER.fullmatch(answer):
        first = NUMBER.search(continuation)
        return first is not None and first.group() == answer
    rest = continuation[len(answer):]
    return continuation.startswith(answer) and not (rest[:1].isalnum() or rest[:1] == "_")


def found_answer(lens, example: Example, trace: Trace, answer_tokens: int) -> tuple[bool, str]:
    """Retrieval accuracy (greedy continuation of the prompt) or QA exact match, for one example, and
    the text judged."""
    if lens.task == "qa":
        spans = lens.answer(example.question, example.context, top_k=1).spans
        said = spans[0].text.strip() if spans else ""
        return bool(spans) and said == example.answer, said
    pad = lens.config.pad_token_id if lens.config.pad_token_id is not None else lens.tokenizer.eos_token_id
    ids = torch.tensor([trace.input_ids], device=lens.device)
    with torch.no_grad():  # a space piece, the answer's tokens, and room to see a longer number
        output = lens.model.generate(ids, max_new_tokens=answer_tokens + 3, do_sample=False, pad_token_id=pad)
    said = lens.tokenizer.decode(output[0, ids.shape[1]:].tolist(), skip_special_tokens=True)
    return retrieved(said, example.answer), said


def _plain(values) -> list[float | None]:
    return [None if math.isnan(v) else float(v) for v in values]


def query_position(trace: Trace, query: int | None) -> int | None:
    """A study's chosen query token in one input: None (the default), a position, or counted from the
    end when negative (−1: the last input token)."""
    if query is None:
        return None
    position = trace.seq_len + query if query < 0 else query
    if not 0 <= position < trace.seq_len:
        raise ValueError(f"query: {query} is no token of an input of {trace.seq_len} tokens; give a position in "
                         f"0..{trace.seq_len - 1} or count from the end (−1 = the last token)")
    return position


def measure(lens, example: Example, index: int, summaries: dict[str, analysis.MagnitudeSummary] | None,
            query: int | None = None) -> Measured:
    """Everything the study reports for one example, from the query token (``query_position``); its
    Table 5 values go into ``summaries`` (pass 1; None: no Table 5)."""
    trace, reference, context = model_input(lens, example)
    allocation = analysis.reference_allocation(trace, reference, context, query=query_position(trace, query))
    sinks = analysis.sink_scores(trace)
    for name, stream in (analysis.outlier_streams(trace).items() if summaries is not None else ()):
        for chunk in stream():
            summaries[name].add(chunk)
    found, said = found_answer(lens, example, trace, allocation.answer[1] - allocation.answer[0])
    return Measured(
        index=index, depth=example.depth, tokens=trace.seq_len, found=found, said=said, query=allocation.query,
        answer={r: _plain(allocation.layer_means(r)[0]) for r in analysis.READINGS},
        noise={r: _plain(allocation.layer_means(r)[1]) for r in analysis.READINGS},
        sink_share={kind: (scores > sinks.threshold).mean(axis=1).tolist() for kind, scores in sinks.scores.items()},
        sink_score={kind: scores.mean(axis=1).tolist() for kind, scores in sinks.scores.items()},
        sink_window=sinks.window, lambdas=trace.lambdas)


def refine(lens, example: Example, summaries: dict[str, analysis.MagnitudeSummary]) -> None:
    """Pass 2 of the Table 5 summaries: the same values again, for the exact median."""
    trace, _, _ = model_input(lens, example)
    for name, stream in analysis.outlier_streams(trace).items():
        for chunk in stream():
            summaries[name].add_fine(chunk)
