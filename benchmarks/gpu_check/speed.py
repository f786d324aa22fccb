"""What the app costs at the real pair's shape: trace vs plain forward, each view, streaming vs
``generate``, and a study (also split over two GPUs with ``accelerate launch`` where there are two)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from diffllama import analysis
from diffllama.study import retrieval_examples, run_study

from .checkpoints import Scale, text_of
from .report import Report, free, timed


def forward(report: Report, arch: str, lens, lengths: tuple[int, ...]) -> None:
    """One plain forward (the app's model, no hidden states kept) and one trace of the same tokens."""
    device = lens.device
    with torch.no_grad():  # first-call costs (kernel selection, lazy init) are not what this compares
        lens.model(torch.tensor([lens.tokenizer(text_of(lens.tokenizer, 64))["input_ids"]], device=device))
    for n in lengths:
        text = text_of(lens.tokenizer, n)
        ids = torch.tensor([lens.tokenizer(text)["input_ids"]], device=device)

        def plain():
            with torch.no_grad():
                return lens.model(ids).logits.shape

        plain_s, plain_gb, _ = timed(plain, device)
        free(device)
        trace_s, trace_gb, trace = timed(lambda: lens.trace(text), device)
        report.add("forward", f"{arch} {trace.seq_len} tokens", None, plain_s=plain_s, trace_s=trace_s,
                   trace_over_plain=trace_s / plain_s, plain_peak_gb=plain_gb, trace_peak_gb=trace_gb)
        del trace
        free(device)


def view_calls(lens, trace, text: str) -> dict:
    """Every analysis view the tabs show, as a visitor would first ask for it (middle layer, head 0)."""
    layer, kind, n = trace.num_layers // 2, trace.kinds[0], trace.seq_len
    side = min(256, n // 2)  # analysis.MAX_REGION per side
    words = text.split()
    calls = {
        "map pooled to 512 (weights)": lambda: analysis.attention_map(trace, layer, 0, kind, 512),
        "map pooled to 512 (contribution norms)": lambda: analysis.attention_map(trace, layer, 0, kind, 512, "norm"),
        f"region {side} × {side}": lambda: analysis.attention_region(trace, layer, 0, kind, (n - side, n),
                                                                       (n - 2 * side, n - side)),
        "one query's row": lambda: analysis.attention_row(trace, layer, 0, kind, n - 1),
        "overview (every layer × head)": lambda: analysis.overview(trace, kind),
        "head statistics": lambda: analysis.head_stats(trace, kind),
        "attention to a span (every reading)": lambda: analysis.reference_allocation(
            trace, analysis.find_reference(text, words[len(words) // 2], 0, "span")),
        "attention sinks": lambda: analysis.sink_scores(trace),
        "activation outliers": lambda: analysis.activation_outliers(trace),
    }
    if trace.lambdas is not None:
        calls["λ ablation (λ = 0)"] = lambda: analysis.lambda_ablation(lens, trace)
    return calls


def views(report: Report, arch: str, lens, lengths: tuple[int, ...]) -> None:
    """Each view's time on a fresh trace cache (the first click after a run)."""
    for n in lengths:
        text = text_of(lens.tokenizer, n)
        trace = lens.trace(text)
        for name, call in view_calls(lens, trace, text).items():
            trace.cache = type(trace.cache)(trace.cache.max_bytes)
            seconds, peak, _ = timed(call, lens.device)
            report.add("views", f"{arch} {trace.seq_len} tokens: {name}", None, seconds=seconds, peak_gb=peak)
        del trace
        free(lens.device)


def streaming(report: Report, arch: str, path: Path, scale: Scale) -> None:
    """``bench.part_streaming`` on the checkpoint (loaded with the app's defaults)."""
    import bench

    try:
        result = bench.part_streaming(str(path), scale.new_tokens, scale.stream_repeats)
    except SystemExit as refusal:  # the two made different numbers of tokens: nothing to compare
        report.add("streaming", f"{arch} streaming vs generate", False, refused=str(refusal))
        return
    report.add("streaming", f"{arch} {result['generated_tokens']} new tokens (tokens/s)", None,
               generate=result["transformers_generate"], app_stream=result["app_stream"],
               app_stream_and_trace=result["app_stream_and_trace"], ratio=result["ratio_streaming"])


def study(report: Report, lenses: dict, paths: dict[str, Path], scale: Scale) -> None:
    """A study of ``scale.study_examples`` inputs over both models in this process; where there are two
    GPUs, the same under ``accelerate launch --num_processes 2``, which must give the same result."""
    examples = retrieval_examples(scale.study_examples, fillers=(scale.study_fillers,))
    seconds, _, result = timed(lambda: run_study(lenses, examples, resamples=scale.study_resamples), next(iter(lenses.values())).device)
    report.add("study", f"{len(examples)} inputs × {len(lenses)} models, one process", None, seconds=seconds,
               fillers_per_input=scale.study_fillers)
    if torch.cuda.device_count() < 2:
        report.add("study", "accelerate launch --num_processes 2", None,
                   skipped=f"needs two GPUs; this machine has {torch.cuda.device_count()}")
        return
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "study"
        command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "-m", "diffllama.study",
                   *(str(paths[arch]) for arch in lenses), "--examples", str(len(examples)),
                   "--fillers", str(scale.study_fillers),
                   "--resamples", str(scale.study_resamples), "--out", str(out)]
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=sys.stderr)
        split = json.loads(out.with_suffix(".json").read_text())
    difference = largest_difference([result["models"][a] for a in lenses], [split["models"][str(paths[a])] for a in lenses])
    report.add("study", "accelerate launch --num_processes 2", difference <= 1e-6,
               seconds=time.perf_counter() - start, largest_difference_from_one_process=difference)


def largest_difference(a, b) -> float:
    """The largest difference between the numbers of two results of the same shape (inf where the shapes differ)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return float("inf")
        a, b = list(a.values()), [b[key] for key in a]
    if isinstance(a, list) and isinstance(b, list):
        return max((largest_difference(x, y) for x, y in zip(a, b)), default=0.0) if len(a) == len(b) else float("inf")
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b)
    return 0.0 if a == b else float("inf")


def quantized(report: Report, lenses: dict, paths: dict[str, Path], text: str, scheme: str = "int8") -> None:
    """Each model loaded into a quantized slot (``source#int8``, as the app's slots take it) with the app's
    defaults, and compared with its full-precision copy on ``text``: the quantized trace runs, λ (not
    quantized: only linear layers are) is unchanged, and what quantization changes is reported."""
    try:
        from diffllama.interventions import compare_quantized
    except ImportError:
        report.add("quantized", f"a quantized ({scheme}) model slot", None,
                   skipped="no quantized loading here (diffllama.interventions.quantize is missing)")
        return
    import diffllama

    for arch, lens in lenses.items():
        device = lens.device
        try:
            load_s, _, small = timed(lambda: diffllama.load(f"{paths[arch]}#{scheme}", device=device.type,
                                                            dtype=lens.model.dtype), device)
        except ValueError as refusal:  # e.g. this machine lacks the scheme's kernels
            report.add("quantized", f"{arch} {scheme}", None, skipped=str(refusal))
            continue
        seconds, peak, comparison = timed(lambda: compare_quantized(lens, small, text), device)
        same_lambdas = comparison.lambdas is None or comparison.lambdas[0] == comparison.lambdas[1]
        report.add("quantized", f"{arch} {scheme}", same_lambdas, load_s=load_s, compare_s=seconds, peak_gb=peak,
                   parameters_gb=sum(p.numel() * p.element_size() for p in small.model.parameters()) / 1e9,
                   top1_agreement=comparison.top1_agreement, largest_map_change=max(comparison.map_change_max))
        del small
        free(device)
