"""Quantized models through transformers' ``TorchAoConfig`` (torchao), named by a source suffix
``#scheme`` (``diffllama-lm#int8``, ``owner/name@revision#int8-dynamic``: ``#`` occurs in no hub id or
revision), and a model compared with its quantized copy on one input."""

from __future__ import annotations

import functools
import importlib.util

import torch

from ..analysis.ablation import compare_outputs
from ..analysis.outliers import activation_outliers
from ..trace import Trace, architecture_of
from .core import answer_change
from .records import QuantizationComparison

SUFFIX = "#"
SCHEMES = {  # name -> (torchao config class, its arguments, what it is)
    "int8": ("Int8WeightOnlyConfig", {}, "int8 weight-only"),
    "int8-dynamic": ("Int8DynamicActivationInt8WeightConfig", {}, "int8 weights and dynamically quantized int8 activations"),
    "int4": ("Int4WeightOnlyConfig", {"group_size": 32}, "int4 weight-only, groups of 32"),
}


def split_source(text: str) -> tuple[str, str | None]:
    """``(source, scheme)`` of a typed source: ``"diffllama-lm#int8"`` → ``("diffllama-lm", "int8")``."""
    if SUFFIX not in text:
        return text, None
    source, _, scheme = text.rpartition(SUFFIX)
    if scheme not in SCHEMES:
        raise ValueError(f"unknown quantization {scheme!r} after {SUFFIX!r}; choose one of {', '.join(SCHEMES)} "
                         f"(e.g. diffllama-lm{SUFFIX}int8)")
    return source, scheme


def _ao_config(scheme: str):
    if importlib.util.find_spec("torchao") is None:
        raise ValueError(f"{scheme} quantization needs the torchao package, which this server does not have")
    import torchao.quantization

    name, arguments, _ = SCHEMES[scheme]
    return getattr(torchao.quantization, name)(**arguments)


@functools.cache
def missing_kernels(scheme: str) -> str | None:
    """Why ``scheme`` cannot run on this machine (its kernels are missing), or None: tried once on a small layer."""
    from torchao.quantization import quantize_

    try:
        quantize_(torch.nn.Sequential(torch.nn.Linear(64, 64)), _ao_config(scheme))
    except (ImportError, RuntimeError, NotImplementedError) as error:
        return str(error) or type(error).__name__
    return None


def quantization_config(scheme: str):
    """transformers' ``TorchAoConfig`` for ``scheme``, refused with a clear message where its kernels are missing."""
    from transformers import TorchAoConfig

    if scheme not in SCHEMES:
        raise ValueError(f"unknown quantization {scheme!r}; choose one of {', '.join(SCHEMES)}")
    missing = missing_kernels(scheme)
    if missing:
        raise ValueError(f"{SCHEMES[scheme][2]} quantization cannot run on this machine: its kernels are missing "
                         f"({missing}); choose {' or '.join(s for s in SCHEMES if s != scheme and not missing_kernels(s))}")
    return TorchAoConfig(_ao_config(scheme))


def _map_change(full: Trace, quantized: Trace, layer: int) -> tuple[float, float]:
    """Mean and largest |Δ| over every head's causal map entries of one layer (the model's own map)."""
    kind = full.kinds[0]
    total, largest = 0.0, 0.0
    for a, b in zip(full.map_blocks(layer, kind), quantized.map_blocks(layer, kind)):
        difference = (a.values - b.values).abs()
        total += float(difference.sum())
        largest = max(largest, float(difference.max()))
    entries = full.num_heads * full.seq_len * (full.seq_len + 1) // 2
    return total / entries, largest


def compare_quantized(full_lens, quantized_lens, text: str, token_id: int | None = None) -> QuantizationComparison:
    """``full_lens`` against ``quantized_lens`` (the same checkpoint quantized) on ``text``: output KL and
    top-1 agreement per position, the answer (language models), λ and the maps' change per layer, and
    activation outliers (Table 5) of both."""
    full, quantized = full_lens.trace(text), quantized_lens.trace(text)
    if full.input_ids != quantized.input_ids or full.arch != quantized.arch:
        raise ValueError("the two models are not one checkpoint and its quantized copy: their inputs or architectures differ")

    outputs = compare_outputs(full_lens, full, quantized.logits)
    answer = None
    if full_lens.task == "generation":
        answer = answer_change(full_lens, full.logits[-1], quantized.logits[-1], token_id, full.seq_len - 1)
    changes = [_map_change(full, quantized, layer) for layer in range(full.num_layers)]
    lambdas = None
    if full.lambdas is not None:
        lambdas = (full.lambdas, architecture_of(quantized_lens.model.config).lambdas(quantized_lens.model)[0])
    return QuantizationComparison(
        full=full_lens.source, quantized=quantized_lens.source, answer=answer, kl=outputs.kl,
        top1_agreement=1.0 - sum(outputs.changed) / len(outputs.changed), lambdas=lambdas,
        map_change=[mean for mean, _ in changes], map_change_max=[largest for _, largest in changes],
        outliers=(activation_outliers(full), activation_outliers(quantized)))
