"""Side-by-side timings and peak memory: plain forward vs trace vs eager output_attentions, map costs,
streaming vs transformers' generate, and the app's endpoints. Rerun: python benchmarks/bench.py --help

Each forward measurement runs in a fresh subprocess so peak memory is that measurement's alone;
peak RSS is sampled every 2 ms while the measured call runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
os.environ.setdefault("DIFFLLAMA_LENS_MEMORY_BUDGET_GB", "1000")  # measure the machine, not the app's guard

SHAPES = {  # random-weight DiffLlamas; "kajuma-layers" has kajuma/DiffLlama-0.3B-handcut's per-layer shape
    "12x1024": dict(hidden_size=1024, num_hidden_layers=12, num_attention_heads=16, num_key_value_heads=16,
                    intermediate_size=2816, vocab_size=32000),
    "kajuma-layers": dict(hidden_size=2048, num_hidden_layers=2, num_attention_heads=32, num_key_value_heads=8,
                          head_dim=64, intermediate_size=8192, vocab_size=128256, tie_word_embeddings=True),
}
MEMORY_LIMIT = 14e9  # skip eager runs whose returned maps alone would exceed this (24 GB machine)


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(fn):
    """(seconds, peak RSS bytes while fn ran, RSS before) of one call."""
    import gc

    gc.collect()
    before, peak, done = rss(), [rss()], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    start = time.perf_counter()
    try:
        result = fn()
    finally:
        seconds = time.perf_counter() - start
        done.set()
        sampler.join()
    peak[0] = max(peak[0], rss())
    del result
    return seconds, peak[0], before


def checkpoint_dir(shape: str) -> Path:
    """A saved random-weight DiffLlama of ``shape`` plus a byte-level tokenizer, built once."""
    path = Path(tempfile.gettempdir()) / f"diffllama-lens-bench-{shape}"
    if not (path / "config.json").exists():
        import torch
        from transformers import DiffLlamaConfig, DiffLlamaForCausalLM

        torch.manual_seed(0)
        DiffLlamaForCausalLM(DiffLlamaConfig(max_position_embeddings=16384, **SHAPES[shape])).save_pretrained(path)
        from diffllama.family.features import tokenizer_texts, train_tokenizer

        # a small byte-level BPE: tokens only label axes here
        train_tokenizer(tokenizer_texts(0, 1000), vocab_size=300).save_pretrained(path)
    return path


def one_forward(shape: str, n: int, mode: str) -> dict:
    """Runs in a subprocess: one forward of ``mode`` at ``n`` tokens."""
    import torch

    torch.manual_seed(0)
    path = checkpoint_dir(shape)
    vocab = SHAPES[shape]["vocab_size"]
    ids = torch.randint(3, 2000 if vocab > 2000 else vocab, (1, n))
    if mode == "trace":
        import diffllama
        from diffllama.tracing import trace_ids

        lens = diffllama.load(path)
        model = lens.model
        fn = lambda: trace_ids(model, lens.tokenizer, lens.arch, ids[0].tolist(), [(0, 0)] * n, [0] * n)  # noqa: E731
    else:
        from transformers import DiffLlamaForCausalLM

        model = DiffLlamaForCausalLM.from_pretrained(path, attn_implementation="sdpa" if mode == "plain" else "eager").eval()
        kwargs = {"output_attentions": True} if mode == "eager" else {}

        def fn():
            with torch.no_grad():
                return model(ids, **kwargs)
    warm = ids[:, :128]  # first-call costs (lazy init, weight pages) are not what this compares
    with torch.no_grad():
        model(warm)
    seconds, peak, before = measure(fn)
    return {"shape": shape, "n": n, "mode": mode, "seconds": seconds, "peak_gb": peak / 1e9, "model_gb": before / 1e9}


def part_forward(shapes, lengths) -> list[dict]:
    rows = []
    for shape in shapes:
        config = SHAPES[shape]
        for n in lengths:
            for mode in ("plain", "trace", "eager"):
                maps_bytes = config["num_hidden_layers"] * config["num_attention_heads"] * n * n * 4
                if mode == "eager" and maps_bytes > MEMORY_LIMIT:
                    rows.append({"shape": shape, "n": n, "mode": mode, "skipped": f"maps alone {maps_bytes / 1e9:.0f} GB"})
                    continue
                out = subprocess.run([sys.executable, __file__, "--one", shape, str(n), mode], capture_output=True, text=True)
                if out.returncode != 0:
                    rows.append({"shape": shape, "n": n, "mode": mode, "skipped": f"failed: {out.stderr.strip().splitlines()[-1]}"})
                else:
                    rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(json.dumps(rows[-1]), flush=True)
    return rows


def part_maps(shape: str, n: int) -> dict:
    """Trace once at ``n`` tokens, then time one full map, one pooled 512 map and the overview grid."""
    import torch

    import diffllama
    from diffllama import analysis
    from diffllama.tracing import trace_ids

    lens = diffllama.load(checkpoint_dir(shape))
    ids = torch.randint(3, 2000, (n,)).tolist()
    trace_seconds, _, _ = measure(lambda: trace_ids(lens.model, lens.tokenizer, lens.arch, ids, [(0, 0)] * n, [0] * n))
    trace = trace_ids(lens.model, lens.tokenizer, lens.arch, ids, [(0, 0)] * n, [0] * n)
    layer = trace.num_layers // 2
    full, full_peak, before = measure(lambda: trace.attention(layer, 0, "diff"))
    pooled, pooled_peak, _ = measure(lambda: trace.pooled(layer, 0, "diff", 512))
    grid, grid_peak, _ = measure(lambda: analysis.overview(trace, "diff", size=32))
    result = {"shape": shape, "n": n, "trace_s": trace_seconds, "full_map_s": full, "pooled_512_s": pooled,
              "overview_s": grid, "full_map_fraction": full / trace_seconds, "pooled_fraction": pooled / trace_seconds,
              "overview_fraction": grid / trace_seconds, "one_head_map_gb": n * n * 4 / 1e9,
              "overview_extra_peak_gb": (grid_peak - before) / 1e9, "pooled_extra_peak_gb": (pooled_peak - before) / 1e9}
    print(json.dumps(result), flush=True)
    return result


VIEW_MODELS = {  # name -> the models traced side by side (A, B)
    "bundled": (str(ROOT / "assets" / "models" / "diffllama-lm"), str(ROOT / "assets" / "models" / "llama-lm")),
    "12x1024": ("12x1024",),
}


def story_ids(tokenizer, n: int) -> list[int]:
    """``n`` token ids of the project's story corpus (real text, so the maps look like the app's)."""
    from diffllama import corpus

    ids, seed = [], 0
    while len(ids) < n:
        ids += tokenizer(" ".join(corpus.generate("story", seed, 50)))["input_ids"]
        seed += 1
    return ids[:n]


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def view_rows(name: str, slot: str, trace, partner) -> list[dict]:
    """Each attention view of one trace from a cold start (queries/keys not yet cached, as on the first
    click after a run): server time split into analysis, figure building and serialisation to the JSON
    the browser receives (gradio sends ``figure.to_json()``), and that JSON's size."""
    import torch

    from components import figures
    from diffllama import analysis
    from diffllama.tracing import LayerCache

    kind, layer, n, rows = trace.kinds[0], trace.num_layers // 2, trace.seq_len, []

    def view(label, compute, draw=None, cold=True):
        if cold:  # the first click after the run: no queries/keys cached yet
            trace.cache = LayerCache(trace.cache.max_bytes)
        with torch.no_grad():
            analysis_s, result = timed(compute)
        build_s, figs = timed(lambda: draw(result)) if draw else (0.0, [])
        serialise_s, payloads = timed(lambda: [len(figure.to_json()) for figure in figs])
        rows.append({"models": name, "model": slot, "n": n, "view": label, "analysis_s": analysis_s, "figure_s": build_s,
                     "serialise_s": serialise_s, "server_s": analysis_s + build_s + serialise_s, "payload_bytes": sum(payloads)})
        print(json.dumps(rows[-1]), flush=True)
        return result

    kinds = (kind, "a1", "a2", "diff") if trace.lambdas else (kind,)  # heatmap, then the A1 | A2 | D decomposition
    view("map view (256 blocks)", lambda: [analysis.attention_map(trace, layer, 0, k, 256) for k in kinds],
         lambda maps: [figures.attention_heatmap(maps[0])] + ([figures.decomposition(*maps[1:]), figures.lambda_profile(
             {slot: (trace.lambdas, trace.lambda_inits)})] if trace.lambdas else []))
    view("zoomed region 256 × 256, full resolution", lambda: trace.region(layer, 0, kind, (n - 256, n), (n - 512, n - 256)))
    view("overview: first layer", lambda: next(analysis.overview_layers(trace, kind, size=24)))
    whole = view("overview: every layer", lambda: analysis.overview(trace, kind, size=24), lambda o: [figures.overview_grid(o)])
    rows[-1]["sampled_rows"] = len(whole.query_rows) if whole.query_rows else None
    stats = view("compare: head statistics", lambda: analysis.head_stats(trace, kind))
    view("compare: activation outliers", lambda: analysis.activation_outliers(trace), cold=False)  # same click
    if partner is not None:  # B's statistics are timed in B's own rows
        partner_stats = analysis.head_stats(partner, partner.kinds[0])
        view("compare: figure (A and B)", lambda: {"A": stats, "B": partner_stats}, lambda both: [figures.head_stats_comparison(both)])
    return rows


def part_views(models: list[str], lengths: list[int]) -> list[dict]:
    """Per-view server times and payloads at each length, for each model set (A and B traced once)."""
    import torch

    import diffllama
    from diffllama.tracing import trace_ids

    rows = []
    for name in models:
        lenses = [diffllama.load(checkpoint_dir(s) if s in SHAPES else s) for s in VIEW_MODELS[name]]
        for n in lengths:
            traces = []
            for slot, lens in zip("AB", lenses):
                ids = story_ids(lens.tokenizer, n)
                with torch.no_grad():
                    lens.model(torch.tensor([ids[:64]], device=lens.device))  # warm-up
                seconds, trace = timed(lambda: trace_ids(lens.model, lens.tokenizer, lens.arch, ids, [(0, 0)] * n, [0] * n))
                rows.append({"models": name, "model": slot, "n": n, "view": "trace", "server_s": seconds})
                print(json.dumps(rows[-1]), flush=True)
                traces.append(trace)
            for slot, trace in zip("AB", traces):
                rows += view_rows(name, slot, trace, traces[1] if slot == "A" and len(traces) > 1 else None)
    print(views_table(rows))
    return rows


def views_table(rows: list[dict]) -> str:
    """The rows as BENCHMARKS.md's Markdown table."""
    lines = ["| models | model | N | view | server | analysis / figure / serialise | payload |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        split = f"{r['analysis_s']:.3f} / {r['figure_s']:.3f} / {r['serialise_s']:.3f} s" if "analysis_s" in r else ""
        payload = f"{r['payload_bytes'] / 1e6:.2f} MB" if r.get("payload_bytes") else ""
        lines.append(f"| {r['models']} | {r['model']} | {r['n']} | {r['view']} | {r['server_s']:.3f} s | {split} | {payload} |")
    return "\n".join(lines)


def part_streaming(source: str, new_tokens: int, repeats: int) -> dict:
    """Tokens per second: the app's streaming runner vs transformers' generate, greedy, same prompt."""
    import torch

    import diffllama

    lens = diffllama.load(source)
    if lens.config.vocab_size > len(lens.tokenizer):  # a random-weight model over a small tokenizer: both runs
        # generate only ids the tokenizer can show, or nothing would stream
        lens.model.generation_config.suppress_tokens = list(range(len(lens.tokenizer), lens.config.vocab_size))
    prompt = "Anna lived in Paris. One morning Anna went to the market."
    ids = lens.tokenizer(prompt, return_tensors="pt")["input_ids"].to(lens.device)

    def transformers_generate():
        with torch.no_grad():
            out = lens.model.generate(ids, max_new_tokens=new_tokens, do_sample=False,  # stops on EOS, as the app does
                                      pad_token_id=lens.config.pad_token_id)
        return out.shape[1] - ids.shape[1]

    def app_stream():
        """(tokens, seconds until the last streamed piece, seconds including the final trace)."""
        start = time.perf_counter()
        stream = lens.generate(prompt, max_new_tokens=new_tokens, greedy=True)
        last_piece = start
        for _ in stream:
            last_piece = time.perf_counter()
        return len(stream.result.token_ids) - stream.result.prompt_length, last_piece - start, time.perf_counter() - start

    transformers_generate()  # warm-up
    app_stream()
    reference, streaming, with_trace = [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        tokens = transformers_generate()
        reference.append(tokens / (time.perf_counter() - start))
        tokens, streamed, total = app_stream()
        streaming.append(tokens / streamed)
        with_trace.append(tokens / total)
    rates = {"transformers_generate": statistics.median(reference), "app_stream": statistics.median(streaming),
             "app_stream_and_trace": statistics.median(with_trace)}
    result = {"source": source, "new_tokens": new_tokens, "generated_tokens": tokens, **rates,
              "ratio_streaming": rates["app_stream"] / rates["transformers_generate"],
              "ratio_with_trace": rates["app_stream_and_trace"] / rates["transformers_generate"]}
    print(json.dumps(result), flush=True)
    return result


def part_endpoints(repeats: int, port: int = 7871) -> dict:
    """Each tab's main endpoint end to end through gradio_client on the bundled models (median)."""
    from gradio_client import Client

    from load_test import launch

    process = launch(port)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        calls = {
            "generate (64 new tokens, greedy, A and B)": ("/generate", ("Anna lived in Paris. One morning Anna went to", 64, True,
                                                                        0.8, 0.95, 0, "diffllama-lm", "llama-lm")),
            "classify (A and B)": ("/classify", ("The film was not bad at all. We were in Lyon.", "diffllama-cls", "llama-cls")),
            "answer (A and B)": ("/answer", ("What is the magic number of Lyon?", "The magic number of Paris is 4341. A light "
                                 "wind came from the sea. The magic number of Lyon is 6087. The magic number of Oslo is 5912.",
                                 5, "diffllama-qa", "llama-qa")),
            "tag (A and B)": ("/tag", ("On 12 May 2021 Bob met Clara at Helix Labs in Oslo.", "diffllama-tag", "llama-tag")),
        }
        result = {}
        for name, (api_name, args) in calls.items():
            client.predict(*args, api_name=api_name)  # warm-up: loads the models into the cache
            samples = []
            for _ in range(repeats):
                start = time.perf_counter()
                client.predict(*args, api_name=api_name)
                samples.append(time.perf_counter() - start)
            result[name] = statistics.median(samples)
            print(json.dumps({name: result[name]}), flush=True)
        return result
    finally:
        process.terminate()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["forward", "maps", "views", "streaming", "endpoints", "all"], default="all")
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES))
    parser.add_argument("--lengths", nargs="+", type=int, default=[512, 2048, 4096, 8192])
    parser.add_argument("--view-models", nargs="+", choices=list(VIEW_MODELS), default=list(VIEW_MODELS))
    parser.add_argument("--view-lengths", nargs="+", type=int, default=[512, 2048, 4096])
    parser.add_argument("--stream-models", nargs="+", default=[str(ROOT / "assets" / "models" / "diffllama-lm"), "12x1024"],
                        help="checkpoint directories, or a shape name for a random-weight model")
    parser.add_argument("--out", default=None, help="write all results as JSON here")
    parser.add_argument("--one", nargs=3, metavar=("SHAPE", "N", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_forward(args.one[0], int(args.one[1]), args.one[2])))
        return
    results = {}
    if args.part in ("forward", "all"):
        results["forward"] = part_forward(args.shapes, args.lengths)
    if args.part in ("maps", "all"):
        results["maps"] = part_maps("12x1024", 4096)
    if args.part in ("views", "all"):
        results["views"] = part_views(args.view_models, args.view_lengths)
    if args.part in ("streaming", "all"):
        results["streaming"] = [part_streaming(str(checkpoint_dir(m)) if m in SHAPES else m, 64, 5) for m in args.stream_models]
    if args.part in ("endpoints", "all"):
        results["endpoints"] = part_endpoints(5)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
