"""The trace's numbers against transformers' own computation of the same checkpoint.

The reference is transformers' eager attention (``output_attentions=True``) in float32 on the same
device. What the app computes in bfloat16 cannot equal it to float32's precision: every layer's
activations are rounded to 8 significant bits. The tolerance bfloat16 allows is therefore measured,
not guessed: transformers' own eager forward in the app's dtype is compared with the float32 one on
the same quantity, and the trace may differ from float32 by at most ``MARGIN`` times that (and by at
least ``FLOOR``, float32's own agreement, which is the whole tolerance when the app runs in float32).

λ is exact: in float32 it equals λ formed from the checkpoint's parameters to float32 rounding; in
bfloat16 the difference is at most the rounding of the 64 products q_i·k_i that transformers'
formula takes in the parameters' dtype (bound per layer: 2⁻⁸·(λ₁·Σ|q₁k₁| + λ₂·Σ|q₂k₂|)).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import transformers

from .report import Report, free

MARGIN = 2.0  # the trace may differ from float32 twice as much as transformers' own forward in the app's dtype
FLOOR = 1e-5  # float32's agreement (the tests' tolerance): the whole tolerance for a float32 app
BF16_UNIT = 2.0 ** -8  # bfloat16's unit roundoff (8 significant bits)


@dataclass
class Reference:
    """What transformers' eager forward gives on the chosen layers: maps ``[H, N, N]``, and per
    (layer, head) the norm of the head's part of the attention output ``[N]``."""

    maps: dict[int, torch.Tensor]
    output_norms: dict[tuple[int, int], torch.Tensor]


def eager(path, ids: list[int], dtype: torch.dtype, device: torch.device, layers: list[int], heads: list[int],
          differential: bool) -> tuple[Reference, list[tuple[float, float]] | None]:
    """transformers' eager forward of ``path`` in ``dtype`` on ``device``, read on ``layers`` × ``heads``,
    and λ per layer from its parameters (``lambda_of``) for a DiffLlama."""
    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="eager").to(device).eval()
    inputs, hooks = {}, []
    for layer in layers:  # the output projection's input: the heads' outputs side by side
        hook = lambda module, args, layer=layer: inputs.__setitem__(layer, args[0][0].float())  # noqa: E731
        hooks.append(model.model.layers[layer].self_attn.o_proj.register_forward_pre_hook(hook))
    with torch.no_grad():
        output = model(torch.tensor([ids], device=device), output_attentions=True)
    for hook in hooks:
        hook.remove()
    maps = {layer: output.attentions[layer][0].float().cpu() for layer in layers}
    norms = {}
    for layer in layers:
        weight = model.model.layers[layer].self_attn.o_proj.weight.float()  # [D, heads·w]
        width = weight.shape[1] // (model.config.num_attention_heads // (2 if differential else 1))
        for head in heads:
            part = slice(head * width, (head + 1) * width)
            norms[layer, head] = (inputs[layer][:, part] @ weight[:, part].T).norm(dim=-1).cpu()
    lambdas = [lambda_of(layer.self_attn) for layer in model.model.layers] if differential else None
    del model, output, inputs
    free(device)
    return Reference(maps, norms), lambdas


@torch.no_grad()
def lambda_of(attn) -> tuple[float, float]:
    """(λ from the parameters in float32, the bound of its bfloat16 rounding): transformers' formula
    exp(q₁·k₁) − exp(q₂·k₂) + λ_init."""
    s1, s2 = (attn.lambda_q1.float() * attn.lambda_k1.float()), (attn.lambda_q2.float() * attn.lambda_k2.float())
    l1, l2 = torch.exp(s1.sum()), torch.exp(s2.sum())
    value = float(l1 - l2 + attn.lambda_init)
    return value, float(BF16_UNIT * (l1 * s1.abs().sum() + l2 * s2.abs().sum()))


def chosen(count: int) -> list[int]:
    """First, one inside (for heads: inside a KV group, 3) and last."""
    return sorted({0, min(3, count - 1), count // 2, count - 1})


def kind_maps(maps: torch.Tensor, head: int, half: int, lam: float | None) -> dict[str, torch.Tensor]:
    """Each kind's map of ``head`` from one layer's softmax maps ``[H, N, N]`` (DiffLlama: A1 is head i,
    A2 head i + H/2, diff = A1 − λ·A2)."""
    if lam is None:
        return {"softmax": maps[head]}
    return {"a1": maps[head], "a2": maps[head + half], "diff": maps[head] - lam * maps[head + half]}


def check(report: Report, arch: str, lens, path, text: str) -> None:
    """Maps, λ and contributions of ``lens``'s trace of ``text`` against eager attention."""
    trace = lens.trace(text)
    device, dtype = lens.device, lens.model.dtype
    layers, heads = chosen(trace.num_layers), chosen(trace.num_heads)
    differential = trace.lambdas is not None
    exact, lambdas = eager(path, trace.input_ids, torch.float32, device, layers, heads, differential)
    rounded = eager(path, trace.input_ids, dtype, device, layers, heads, differential)[0] if dtype != torch.float32 else exact
    if differential:
        check_lambdas(report, arch, trace.lambdas, lambdas, dtype)
    for layer in layers:
        for head in heads:
            lam, lam_shown = (lambdas[layer][0], trace.lambdas[layer]) if differential else (None, None)
            want = kind_maps(exact.maps[layer], head, trace.num_heads, lam)
            near = kind_maps(rounded.maps[layer], head, trace.num_heads, lam_shown)  # with the λ the app shows
            for kind, reference in want.items():
                error = float((trace.attention(layer, head, kind) - reference).abs().max())
                allowed = max(MARGIN * float((near[kind] - reference).abs().max()), FLOOR)
                report.add("exact", f"{arch} map {kind} layer {layer} head {head}", error <= allowed,
                           tokens=trace.seq_len, max_abs_error=error, tolerance=allowed)
            check_contributions(report, arch, trace, layer, head, exact, rounded)


def check_lambdas(report: Report, arch: str, shown: list[float], lambdas: list[tuple[float, float]], dtype) -> None:
    for layer, (value, bound) in enumerate(lambdas):
        allowed = (bound if dtype != torch.float32 else 0.0) + 4 * torch.finfo(torch.float32).eps * abs(value)
        error = abs(shown[layer] - value)
        report.add("exact", f"{arch} λ layer {layer}", error <= allowed, shown=shown[layer], float32=value,
                   error=error, tolerance=allowed)


def check_contributions(report: Report, arch: str, trace, layer: int, head: int, exact: Reference,
                        rounded: Reference) -> None:
    """Each row's contributions projected on the head's output sum to its norm ‖o_i‖ (float32 rounding),
    and ‖o_i‖ is the head's real output in transformers' forward (relative to its largest value)."""
    record = trace.contributions(layer, head)
    sizes = torch.from_numpy(record.output_norms)
    summed = torch.from_numpy(record.projections).sum(1)
    scale = float(exact.output_norms[layer, head].abs().max())
    internal = float((summed - sizes).abs().max()) / scale
    report.add("exact", f"{arch} contributions sum to ‖o‖ layer {layer} head {head}", internal <= 1e-4,
               relative_error=internal, tolerance=1e-4)
    error = float((sizes - exact.output_norms[layer, head]).abs().max()) / scale
    own = float((rounded.output_norms[layer, head] - exact.output_norms[layer, head]).abs().max()) / scale
    allowed = max(MARGIN * own, FLOOR)
    report.add("exact", f"{arch} ‖o‖ = head output layer {layer} head {head}", error <= allowed,
               relative_error=error, tolerance=allowed)
