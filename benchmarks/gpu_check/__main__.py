"""python -m benchmarks.gpu_check [--scale full|tiny] [--device cuda|cpu] [--parts ...] [--out FILE]"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]  # diffllama, components and bench.py
PARTS = ["exact", "forward", "views", "streaming", "study", "zerogpu", "quantized"]


def parse(argv=None) -> argparse.Namespace:
    from . import __doc__ as about

    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=about,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=["full", "tiny"], default="full",
                        help="full: the real pair's configs and lengths; tiny: the same checks in seconds")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                        help="cuda loads as the app does on a GPU (bfloat16, device_map='auto')")
    parser.add_argument("--dtype", choices=["auto", "bfloat16", "float32"], default="auto",
                        help="the app's dtype: auto is bfloat16 on CUDA and float32 on the CPU")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=PARTS)
    parser.add_argument("--workdir", type=Path, default=None, help="where the checkpoints are built (and reused)")
    parser.add_argument("--out", type=Path, help="write every row as JSON")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    arguments = parse(argv)
    if arguments.device == "cpu":  # before torch is imported: every load (the app's cache's too) picks the CPU
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    os.environ.setdefault("DIFFLLAMA_LENS_MEMORY_BUDGET_GB", "1000")  # measure the machine, not the app's guard
    os.environ.setdefault("DIFFLLAMA_LENS_MAX_TOKENS", "131072")  # 32K-token traces: past the app's per-request limit
    import torch

    import diffllama

    from . import checkpoints, exactness, speed, zerogpu
    from .report import Report

    if arguments.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --device cpu (and --scale tiny for a quick check)")
    start, report, scale = time.perf_counter(), Report(), checkpoints.SCALES[arguments.scale]
    root = arguments.workdir or Path(tempfile.gettempdir()) / "diffllama-lens-gpu-check"
    device = torch.device(arguments.device)
    paths = {arch: checkpoints.build(arch, scale, root, device) for arch in checkpoints.REAL_PAIR}
    lenses = {arch: diffllama.load(path, device=arguments.device, dtype=arguments.dtype) for arch, path in paths.items()}
    report.add("setup", "checkpoints", None, shape=" / ".join(checkpoints.REAL_PAIR.values()), scale=scale.name,
               device=str(lenses["diffllama"].device), dtype=str(lenses["diffllama"].model.dtype),
               placement=str(getattr(lenses["diffllama"].model, "hf_device_map", "one device")),
               gpus=torch.cuda.device_count(), seconds=time.perf_counter() - start)
    for part in arguments.parts:
        run_part(part, report, lenses, paths, scale)
    report.add("setup", "whole run", None, seconds=time.perf_counter() - start)
    print(report.markdown())
    if arguments.out:
        report.write(arguments.out)
    print(f"{len(report.failures)} of {sum(r['ok'] is not None for r in report.rows)} checks failed" if report.failures
          else f"all {sum(r['ok'] is not None for r in report.rows)} checks passed")
    return 1 if report.failures else 0


def run_part(part: str, report, lenses: dict, paths: dict, scale) -> None:
    from . import checkpoints, exactness, speed, zerogpu
    from .report import free

    if part == "exact":
        for arch, lens in lenses.items():
            exactness.check(report, arch, lens, paths[arch], checkpoints.text_of(lens.tokenizer, scale.exact_tokens))
    elif part in ("forward", "views"):
        for arch, lens in lenses.items():
            getattr(speed, part)(report, arch, lens, scale.lengths if part == "forward" else scale.view_lengths)
    elif part == "streaming":
        for arch, path in paths.items():
            speed.streaming(report, arch, path, scale)
    elif part == "study":
        speed.study(report, lenses, paths, scale)
    elif part == "zerogpu":
        zerogpu.check(report, paths)
    elif part == "quantized":
        speed.quantized(report, lenses, paths, checkpoints.text_of(lenses["diffllama"].tokenizer, scale.exact_tokens))
    free(next(iter(lenses.values())).device)


if __name__ == "__main__":
    sys.exit(main())
