"""Peak memory and CPU-seconds of a trace against a plain SDPA forward, exactly: each mode in a fresh
process, the peak read from the kernel's high-water mark (VmHWM, reset before the call) rather than
sampled, CPU time from getrusage (stable on a loaded machine, where wall time is not). glibc's
dynamic mmap threshold makes RSS depend on what was freed before; run with a fixed one to compare:

    MALLOC_MMAP_THRESHOLD_=131072 python benchmarks/trace_memory.py --shape 12x1024 --n 2048

``trace`` also times the views that read queries: one pooled map (every row of one layer) and one
query row of every layer × head (span allocation's reads)."""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
from bench import SHAPES, checkpoint_dir, rss  # noqa: E402


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(fn) -> tuple[object, float, float, int]:
    """(result, CPU-seconds, wall seconds, peak RSS bytes during the call) of one call."""
    import gc

    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := the current RSS
    start, wall = cpu_seconds(), time.perf_counter()
    result = fn()
    seconds, wall = cpu_seconds() - start, time.perf_counter() - wall
    with open("/proc/self/status") as f:
        peak = int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1)) * 1024
    return result, seconds, wall, peak


def one(shape: str, n: int, mode: str) -> dict:
    import torch

    torch.manual_seed(0)
    path = checkpoint_dir(shape)
    ids = torch.randint(3, 300, (1, n))
    if mode == "plain":
        from transformers import DiffLlamaForCausalLM

        model = DiffLlamaForCausalLM.from_pretrained(path, attn_implementation="sdpa").eval()
        run = lambda: model(ids)  # noqa: E731
    else:
        import diffllama
        from diffllama.trace import trace_ids

        lens = diffllama.load(path)
        model = lens.model
        run = lambda: trace_ids(model, lens.tokenizer, lens.arch, ids[0].tolist(), [(0, 0)] * n, [0] * n)  # noqa: E731
    with torch.no_grad():
        model(ids[:, :128])  # first-call costs are not what this compares
        row = {"shape": shape, "n": n, "mode": mode, "model_gb": rss() / 1e9}
        result, row["cpu_s"], row["wall_s"], peak = measure(run)
    row["peak_gb"] = peak / 1e9
    if mode == "trace":
        trace, layer = result, result.num_layers // 2
        _, row["pooled_map_cpu_s"], _, peak = measure(lambda: trace.pooled(layer, 0, trace.kinds[0], 512))
        row["with_pooled_map_peak_gb"] = peak / 1e9
        _, row["one_row_every_head_cpu_s"], _, _ = measure(lambda: [trace.rows(l, h, trace.kinds[0], [n - 1])
                                                                 for l in range(trace.num_layers) for h in range(trace.num_heads)])
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=list(SHAPES), default="12x1024")
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--mode", choices=["plain", "trace"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(one(args.shape, args.n, args.mode)))
        return
    rows = {}
    for mode in ("plain", "trace"):
        out = subprocess.run([sys.executable, __file__, "--shape", args.shape, "--n", str(args.n), "--mode", mode],
                             capture_output=True, text=True, check=True)
        rows[mode] = json.loads(out.stdout.strip().splitlines()[-1])
        print(json.dumps(rows[mode]), flush=True)
    plain, trace = rows["plain"], rows["trace"]
    print(f"trace / plain at {args.n} tokens on {args.shape}: {trace['cpu_s'] / plain['cpu_s']:.2f}× CPU-seconds, "
          f"{trace['peak_gb'] / plain['peak_gb']:.2f}× peak memory "
          f"({trace['with_pooled_map_peak_gb'] / plain['peak_gb']:.2f}× with one pooled map after it)")


if __name__ == "__main__":
    main()
