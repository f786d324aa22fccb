"""What every intervention shares: the per-request ``Intervention``, the hooks that read it, one
forward pass under it, and the answer-first readout.

Mechanism. An intervention lives in the ``trace.INTERVENTION`` context variable for the duration
of one forward pass (``run``), and is read by the attention function (λ per layer) and by two hooks
registered once per model (``attach``): a pre-hook on each layer's output projection (the heads'
outputs, where ablation and patching act) and a pre-hook on each decoder layer (the residual stream
entering it). With no intervention set the hooks return at once and change nothing. The value is
per context: a gradio worker thread, or a worker started with a copy of the request's context, sees
its own request's intervention and never another's. Nothing in the model is written: the hooks
return edited copies of the activations."""

from __future__ import annotations

import math
import threading
import weakref
from dataclasses import dataclass, field, replace
from functools import partial

import torch

from .. import budget
from ..analysis.ablation import compare_outputs
from ..tokens import display_token
from ..trace import INTERVENTION, LambdaOverride, Trace, architecture_of, task_logits
from .records import AnswerChange, InterventionResult

HEAD_MODES = ("zero", "mean")
MAX_ROWS = 64  # interventions run side by side in one batched forward pass, at most


@dataclass(frozen=True)
class HeadEdit:
    """One head's output, as the output projection reads it, replaced in batch row ``row`` (every row when None)."""

    layer: int
    head: int  # a differential head (both of its maps) for DiffLlama, a softmax head otherwise
    mode: str  # "zero"; "mean" (its mean over the input's positions); "patch" (``source``)
    row: int | None = None
    source: torch.Tensor | None = None  # "patch": the head's output [N, w] from another run


@dataclass(frozen=True)
class ResidualEdit:
    """The residual stream entering decoder layer ``layer`` at ``position`` replaced by ``source`` [D] in batch row ``row``."""

    layer: int
    position: int
    source: torch.Tensor
    row: int | None = None


@dataclass
class Intervention:
    """Everything one request changes in its forward pass. ``record``, when a dict, receives each layer's
    head outputs ``[B, N, heads, w]`` as the output projection reads them (after this intervention's edits)."""

    lambdas: LambdaOverride | None = None
    heads: list[HeadEdit] = field(default_factory=list)
    residuals: list[ResidualEdit] = field(default_factory=list)
    record: dict[int, torch.Tensor] | None = None

    def __post_init__(self):
        self._heads_by_layer: dict[int, list[HeadEdit]] = {}
        for edit in self.heads:
            self._heads_by_layer.setdefault(edit.layer, []).append(edit)
        self._residuals_by_layer: dict[int, list[ResidualEdit]] = {}
        for edit in self.residuals:
            self._residuals_by_layer.setdefault(edit.layer, []).append(edit)


def head_shape(model) -> tuple[int, int]:
    """(heads, width) of the output projection's input: DiffLlama's H/2 differential heads of width
    2·head_dim (A1·V and A2·V combined and normed), else H heads of width head_dim."""
    shape = architecture_of(model.config).shape
    return shape.map_heads, shape.value_width


def output_projection(model, layer: int) -> torch.nn.Module:
    """Decoder layer ``layer``'s output projection, as its architecture names it."""
    return architecture_of(model.config).output_projection(model.base_model.layers[layer].self_attn)


def _edit_heads(layer: int, heads: int, width: int, module, args):
    intervention = INTERVENTION.get()
    if intervention is None:
        return None
    edits = intervention._heads_by_layer.get(layer, ())
    if not edits and intervention.record is None:
        return None
    outputs = args[0].view(*args[0].shape[:-1], heads, width)  # [B, N, heads, w]
    if edits:
        outputs = outputs.clone()
        for edit in edits:
            rows = slice(None) if edit.row is None else edit.row
            if edit.mode == "zero":
                outputs[rows, :, edit.head] = 0
            elif edit.mode == "mean":
                outputs[rows, :, edit.head] = outputs[rows, :, edit.head].mean(dim=-2, keepdim=True)
            else:
                outputs[rows, :, edit.head] = edit.source.to(outputs.dtype)
    if intervention.record is not None:
        intervention.record[layer] = outputs.detach()
    return (outputs.flatten(-2), *args[1:]) if edits else None


def _edit_residual(layer: int, module, args):
    intervention = INTERVENTION.get()
    if intervention is None or layer not in intervention._residuals_by_layer:
        return None
    hidden = args[0].clone()  # [B, N, D]
    for edit in intervention._residuals_by_layer[layer]:
        rows = slice(None) if edit.row is None else edit.row
        hidden[rows, edit.position] = edit.source.to(hidden.dtype)
    return (hidden, *args[1:])


_ATTACHED: "weakref.WeakSet[torch.nn.Module]" = weakref.WeakSet()
_ATTACH_LOCK = threading.Lock()


def attach(model) -> None:
    """Register the two hooks on every layer of ``model``, once (they do nothing without an intervention)."""
    with _ATTACH_LOCK:
        if model in _ATTACHED:
            return
        heads, width = head_shape(model)
        for index, layer in enumerate(model.base_model.layers):
            output_projection(model, index).register_forward_pre_hook(partial(_edit_heads, index, heads, width))
            layer.register_forward_pre_hook(partial(_edit_residual, index))
        _ATTACHED.add(model)


@torch.no_grad()
def run(model, input_ids: list[int], intervention: Intervention | None, rows: int = 1, last_only: bool = False):
    """One forward pass of the transformers ``model`` over ``input_ids`` repeated in ``rows`` batch rows,
    under ``intervention`` (set for this pass only, in this context only). ``last_only`` keeps the
    logits of the last position only (language models)."""
    attach(model)
    ids = torch.tensor([input_ids] * rows, device=model.device)
    extra = {"logits_to_keep": 1} if last_only else {}
    token = INTERVENTION.set(intervention)
    try:
        return model(input_ids=ids, **extra)
    finally:
        INTERVENTION.reset(token)


def batch_rows(model, n: int, wanted: int) -> int:
    """How many interventions one batched pass over ``n`` tokens may hold within the memory budget."""
    return max(1, min(wanted, MAX_ROWS, int(budget.budget_bytes() // max(budget.forward_bytes(model, n), 1))))


def batched(model, input_ids: list[int], variants: list[list[HeadEdit | ResidualEdit]]) -> list[torch.Tensor]:
    """The last position's logits ``[V]`` (float32, CPU) under each variant (a list of edits), several
    variants side by side in the batch rows of one forward pass."""
    size = batch_rows(model, len(input_ids), len(variants))
    results = []
    for start in range(0, len(variants), size):
        chunk = variants[start:start + size]
        edits = [replace(edit, row=row) for row, variant in enumerate(chunk) for edit in variant]
        intervention = Intervention(heads=[e for e in edits if isinstance(e, HeadEdit)],
                                    residuals=[e for e in edits if isinstance(e, ResidualEdit)])
        output = run(model, input_ids, intervention, rows=len(chunk), last_only=True)
        results.extend(output.logits[:, -1].float().cpu())
    return results


def require_language_model(lens, what: str) -> None:
    if lens.task != "generation":
        raise ValueError(f"{what} reads the next-token prediction: load a language model (task 'generation'); "
                         f"{lens.source} is a {lens.task} model")


def answer_id(lens, text: str, answer: str) -> int | None:
    """The answer's first token as it continues ``text`` (a space is put between them when neither
    has one), or None for an empty answer (the model's own prediction is read then)."""
    if not answer or not answer.strip():
        return None
    if not text[-1:].isspace() and not answer[:1].isspace():
        answer = " " + answer
    prefix = lens.tokenizer(text)["input_ids"]
    full = lens.tokenizer(text + answer)["input_ids"]
    if len(full) <= len(prefix) or full[:len(prefix)] != prefix:
        raise ValueError(f"answer: {answer.strip()!r} does not continue the text as separate tokens; give the text "
                         "that comes right after the input (e.g. ' 4821' after '… of Lyon is')")
    return full[len(prefix)]


def token_name(lens, token_id: int) -> str:
    return display_token(lens.tokenizer.decode([token_id]), token_id in set(lens.tokenizer.all_special_ids))


def answer_change(lens, before: torch.Tensor, after: torch.Tensor, token_id: int | None, position: int) -> AnswerChange:
    """The answer at ``position`` from logits ``before`` and ``after`` [V]; None: the top prediction before."""
    chosen = "given" if token_id is not None else "predicted"
    token_id = int(before.argmax()) if token_id is None else token_id
    if not 0 <= token_id < before.shape[-1]:
        raise ValueError(f"answer token {token_id} is outside the vocabulary of {before.shape[-1]} tokens")

    def read(logits):
        logits = logits.float()
        probability = torch.softmax(logits, -1)[token_id]
        return float(probability), int((logits > logits[token_id]).sum()) + 1, float(logits[token_id])

    (p0, r0, l0), (p1, r1, l1) = read(before), read(after)
    return AnswerChange(token_name(lens, token_id), token_id, position, (p0, p1), (r0, r1), (l0, l1), chosen)


def intervene(lens, trace: Trace, intervention: Intervention, description: str, token_id: int | None = None,
              value: float = math.nan) -> InterventionResult:
    """Rerun ``trace``'s input under ``intervention`` and read the change: the answer first (language
    models), then every position's KL and top prediction (``value``: the λ set everywhere, if that is what changed)."""
    after = task_logits(run(lens.model, trace.input_ids, intervention))
    answer = None
    if lens.task == "generation":
        answer = answer_change(lens, trace.logits[-1], after[-1], token_id, trace.seq_len - 1)
    return InterventionResult(description, answer, compare_outputs(lens, trace, after, value))
