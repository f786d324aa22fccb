"""Side-by-side timings and peak memory: plain forward vs trace vs eager output_attentions, map costs,
every attention view through the UI's handlers (server side) and in headless Chromium (end to end),
each step of a pass over the maps on one block, streaming vs transformers' generate, and the app's endpoints. Rerun: python benchmarks/bench.py --help;
BENCHMARKS.md's view and streaming tables: python benchmarks/bench.py --part views block browser streaming

Each forward measurement runs in a fresh subprocess so peak memory is that measurement's alone;
peak RSS is sampled every 2 ms while the measured call runs. Views and streaming are timed in a
worker thread, as the app computes (``in_worker``). Each part prints its Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
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
os.environ.setdefault("DIFFLLAMA_LENS_REQUEST_SECONDS", "3600")  # measure slow views rather than stop them

SHAPES = {  # random-weight DiffLlamas; "kajuma-layers" has kajuma/DiffLlama-0.3B-handcut's per-layer shape
    "12x1024": dict(hidden_size=1024, num_hidden_layers=12, num_attention_heads=16, num_key_value_heads=16,
                    intermediate_size=2816, vocab_size=32000),
    "kajuma-layers": dict(hidden_size=2048, num_hidden_layers=2, num_attention_heads=32, num_key_value_heads=8,
                          head_dim=64, intermediate_size=8192, vocab_size=128256, tie_word_embeddings=True),
    # kajuma/DiffLlama-0.3B-handcut's whole config (tests/test_real_checkpoint_shapes.py): what a CPU Space's visitor meets
    "kajuma": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8, head_dim=64,
                   intermediate_size=8192, vocab_size=128256, tie_word_embeddings=True, rms_norm_eps=1e-5,
                   rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
                                    "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
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


HEADS = {"generation": "DiffLlamaForCausalLM", "classification": "DiffLlamaForSequenceClassification"}


def checkpoint_dir(shape: str, task: str = "generation") -> Path:
    """A saved random-weight DiffLlama of ``shape`` for ``task`` (a language model, or a two-label
    classifier: the classification tab reads an input of any length), plus a byte-level tokenizer, built once."""
    path = Path(tempfile.gettempdir()) / f"diffllama-lens-bench-{shape}{'' if task == 'generation' else '-' + task}"
    if not (path / "config.json").exists():
        import torch
        import transformers

        torch.manual_seed(0)
        model_class = getattr(transformers, HEADS[task])
        model_class(transformers.DiffLlamaConfig(**{"max_position_embeddings": 16384, **SHAPES[shape]})).save_pretrained(path)
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
        from diffllama.trace import trace_ids

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
    from diffllama.trace import trace_ids

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


VIEW_MODELS = {  # name -> (model A, model B or None, the views' "models" choice)
    "bundled": ("diffllama", "llama", "A and B"),
    "12x1024": ("12x1024", None, "A"),
    "kajuma": ("kajuma", None, "A"),
}
TAB = "classification"  # the tab the views run on (an input past a model's trained positions is refused, not cut)
BUNDLED = ROOT / "assets" / "models"


def model_dir(name: str, task: str) -> Path:
    """A bundled model ("diffllama", "llama") or a benchmark shape, as a checkpoint directory for ``task``."""
    return checkpoint_dir(name, task) if name in SHAPES else BUNDLED / f"{name}-{'cls' if task == 'classification' else 'lm'}"


def story_text(tokenizer, n: int) -> str:
    """Story-corpus text (real text, so the maps look like the app's) that ``tokenizer`` reads as ``n``
    tokens, specials included (or fewer when a last word does not fit)."""
    from diffllama.family import corpus

    words, seed = [], 0
    while len(tokenizer(" ".join(words))["input_ids"]) < n:
        words += " ".join(story.text for story in corpus.generate("story", seed, 20)).split()
        seed += 1
    low, high = 0, len(words)  # the most words that fit
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if len(tokenizer(" ".join(words[:middle]))["input_ids"]) <= n else (low, middle - 1)
    return " ".join(words[:low])


class Timed(tuple):
    """(seconds, result) of a call, with ``cpu``: the CPU-seconds the whole process spent meanwhile
    (every thread: a pass's worker threads too), and ``peak``: the process's peak RSS (bytes)."""

    cpu: float
    peak: int


def in_worker(fn) -> Timed:
    """(seconds, result) of ``fn()`` run in a fresh thread, as gradio runs a request's handler and the
    app its ``generate``, with its CPU-seconds and peak memory (``Timed``). CPU-seconds are this
    report's primary figure: on the shared 2-core machine a call's wall time depends on who else runs
    (several times over at a load of 10 or more), the work it does far less."""
    outcome, done, peak = {}, threading.Event(), [rss()]

    def run():
        start = time.perf_counter()
        try:
            outcome["result"] = fn()
        except BaseException as error:  # noqa: BLE001 - raised again in the caller's thread
            outcome["error"] = error
        outcome["seconds"] = time.perf_counter() - start

    def sample():
        while not done.wait(0.01):
            peak[0] = max(peak[0], rss())

    sampler = threading.Thread(target=sample)
    sampler.start()
    cpu = time.process_time()
    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    cpu = time.process_time() - cpu
    done.set()
    sampler.join()
    if "error" in outcome:
        raise outcome["error"]
    timed = Timed((outcome["seconds"], outcome["result"]))
    timed.cpu, timed.peak = cpu, max(peak[0], rss())
    return timed


def cpu_rates() -> dict[str, float]:
    """This CPU's single-precision matrix product (GFLOP) and exp (G values) per CPU-second, measured
    in one worker thread kept to one core: the rates the arithmetic floors divide by."""
    import torch

    from diffllama.cores import one_core

    def measure():
        one_core()
        a, x = torch.randn(2048, 2048), torch.randn(1 << 22)
        a @ a, torch.exp(x)  # warm-up
        start = time.thread_time()
        for _ in range(4):
            a @ a
        sgemm = 4 * 2 * 2048 ** 3 / (time.thread_time() - start) / 1e9
        start = time.thread_time()
        for _ in range(20):
            torch.exp(x)
        return {"sgemm_gflop": sgemm, "exp_g": 20 * x.numel() / (time.thread_time() - start) / 1e9}

    return in_worker(measure)[1]


def causal_logits(rows) -> int:
    """Causal (query, key) pairs of the query positions ``rows``: row r sees r + 1 keys."""
    return sum(int(r) + 1 for r in rows)


def read_traces(view: str, traces: dict, shown: str) -> dict:
    """The traces ``view`` reads: both for compare and the outliers, else the shown models' ("A and B":
    each of the map, zoom, contributions and overview views draws both)."""
    both = view.startswith(("compare", "activation outliers")) or shown == "A and B"
    return dict(traces) if both else {"A": traces["A"]}


def arithmetic_floor(view: str, traces: dict, rates: dict[str, float]) -> float | None:
    """The least CPU-seconds ``view`` can take at this CPU's rates over the ``traces`` it reads
    (``read_traces``): the products of the queries and keys it must project (each model's input norm
    aside) and of the logits it must read (2·head_dim flops each), at the SGEMM rate, plus one exp per
    logit where the view applies softmax. The products and softmax over every causal logit of the rows
    a view shows, since a softmax row needs its whole row; none of the figure building, pooling or
    statistics (a floor, not an estimate)."""
    total = 0.0
    for trace in traces.values():
        config = trace._model.config
        d, hidden, n = config.head_dim, config.hidden_size, trace.seq_len
        heads, kv = config.num_attention_heads, config.num_key_value_heads
        per_head = heads // trace.num_heads  # softmax heads behind one shown head: 2 for DiffLlama
        if view.startswith(("map view", "contributions")):
            layers, softmax_heads, kv_heads, rows = 1, per_head, 1, range(n)
        elif view.startswith("zoomed"):
            layers, softmax_heads, kv_heads, rows = 1, per_head, 1, range(max(n - 256, 0), n)
        elif view.startswith("overview"):
            sample = trace.overview_rows(24)
            layers, softmax_heads, kv_heads, rows = trace.num_layers, heads, kv, range(n) if sample is None else sample
        elif view.startswith(("compare", "activation outliers")):
            layers, softmax_heads, kv_heads, rows = trace.num_layers, heads, kv, range(n)
        else:
            return None
        logits = layers * softmax_heads * causal_logits(rows)
        projections = layers * 2 * hidden * d * (len(rows) * softmax_heads + n * kv_heads)
        exps = 0 if view.startswith("activation outliers") else logits
        values = 2 * n * hidden * d * 2 if view.startswith("contributions") else 0  # the head's values (both halves)
        total += (projections + values + 2 * d * logits) / (rates["sgemm_gflop"] * 1e9) + exps / (rates["exp_g"] * 1e9)
    return total


def payload_bytes(value) -> int:
    """Bytes the browser receives for a handler's (or the API's) outputs: a figure's JSON (what gradio
    sends), a gallery's image files and captions, anything else as JSON."""
    import plotly.graph_objects as go

    if isinstance(value, go.Figure):
        return len(value.to_json())
    if isinstance(value, (list, tuple)):
        return sum(payload_bytes(v) for v in value)
    if isinstance(value, dict) and any(isinstance(v, (str, list, dict)) for v in value.values()):  # e.g. a gallery item
        return sum(len(str(k)) + payload_bytes(v) for k, v in value.items())
    if isinstance(value, str) and "\n" not in value and len(value) < 1024 and Path(value).is_file():
        return Path(value).stat().st_size
    return len(json.dumps(value, default=str)) if value is not None else 0


class FigureClock:
    """Time spent in ``components.figures`` while it is installed (the package's public functions wrapped; a
    call from one of them to another counts once)."""

    def __init__(self):
        from components import figures

        self.seconds, self._depth, self._module = 0.0, 0, figures
        self._originals = {name: fn for name, fn in vars(figures).items()
                           if callable(fn) and not isinstance(fn, type) and (getattr(fn, "__module__", None) or "").startswith(figures.__name__)
                           and not name.startswith("_")}

    def _wrap(self, fn):
        def timed(*args, **kwargs):
            self._depth += 1
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self.seconds += time.perf_counter() - start
        return timed

    def __enter__(self):
        for name, fn in self._originals.items():
            setattr(self._module, name, self._wrap(fn))
        return self

    def __exit__(self, *exc):
        for name, fn in self._originals.items():
            setattr(self._module, name, fn)


def ui_views(shown: str, trace) -> dict:
    """The attention views as the UI serves them (``components.panel``'s handlers, on the
    run stored for tab ``TAB``), with what a visitor would pick for ``trace`` (model A)."""
    from components.panel import compare, maps, overview, zoom

    layer, n = trace.num_layers // 2, trace.seq_len
    return {
        "map view (256 blocks, with decomposition and λ)": lambda: maps.show_map(TAB, shown, layer, 0, "diff", 256),
        "zoomed region 256 × 256, full resolution": lambda: zoom.zoom(TAB, shown, layer, 0, "diff", max(n - 256, 0), n,
                                                                      max(n - 512, 0), max(n - 256, 1)),
        "contributions map (norms, 256 blocks)": lambda: maps.show_map(TAB, shown, layer, 0, "diff", 256, "norm"),
        "overview (every layer × head)": lambda: overview.show_overview(TAB, shown, "diff", "entropy", overview.ORDERS[0]),
        "compare A vs B": lambda: compare.compare(TAB, ""),
        "activation outliers (their own button)": lambda: compare.outliers(TAB),
    }


def median_run(runs: list, cpu) -> object:
    """The run of ``runs`` whose CPU-seconds (``cpu(run)``) are the median (the lower middle of an even count)."""
    return sorted(runs, key=cpu)[(len(runs) - 1) // 2]


def view_rows(name: str, n: int, run, shown: str, rates: dict[str, float], trace_cpu: dict[str, float],
              repeats: int = 1) -> list[dict]:
    """Each view of a stored run through the UI's handler, from a cold start (no queries/keys cached:
    the first click after a run; the run with the median CPU-seconds of ``repeats``), in a worker thread as gradio runs it: wall and CPU-seconds, the
    handler's time split into figure building (``components.figures``) and the rest (analysis), then
    serialisation to what the browser receives (``payload_bytes``), the process's peak memory, and
    the view's CPU-seconds against its arithmetic floor (``arithmetic_floor``) and against the CPU of
    the traces of the models it reads (``read_traces``: both for "A and B", compare and outliers)."""
    import torch

    from diffllama import analysis
    from diffllama.trace import LayerCache

    trace = run.traces["A"]
    rows = []

    def row(view: str, **values):
        rows.append({"models": name, "n": n, "view": view, "load": os.getloadavg()[0], **values})
        print(json.dumps(rows[-1]), flush=True)

    def cold():
        for t in run.traces.values():
            t.cache = LayerCache(t.cache.max_bytes)

    def measured(handler):
        cold()
        with FigureClock() as clock, torch.no_grad():
            timed = in_worker(handler)
        return timed, in_worker(lambda: payload_bytes(timed[1])), clock.seconds

    for view, handler in ui_views(shown, trace).items():
        timed, serialise, figure_s = median_run([measured(handler) for _ in range(repeats)], lambda m: m[0].cpu + m[1].cpu)
        read = read_traces(view, run.traces, shown)
        floor = arithmetic_floor(view, read, rates)
        cpu = timed.cpu + serialise.cpu
        row(view, analysis_s=timed[0] - figure_s, figure_s=figure_s, serialise_s=serialise[0],
            server_s=timed[0] + serialise[0], cpu_s=cpu, floor_s=floor, peak_gb=max(timed.peak, serialise.peak) / 1e9,
            of_trace=cpu / sum(trace_cpu[slot] for slot in read), of_floor=cpu / floor if floor else None,
            payload_bytes=serialise[1])
    cold()
    first = in_worker(lambda: next(analysis.overview_layers(trace, trace.kinds[0], size=24)))
    row("overview: first layer (backend, A)", server_s=first[0], cpu_s=first.cpu, peak_gb=first.peak / 1e9)
    return rows


def part_views(models: list[str], lengths: list[int], repeats: int = 1) -> list[dict]:
    """Per-view server times and payloads at each length, for each model set: each trace and each view
    ``repeats`` times, the run with the median CPU-seconds reported (on a shared machine one run can
    take twice another's), after every view once on a 64-token run (the first call's imports and
    set-up are not what a view costs a running server)."""
    import torch

    import diffllama
    from components import run_store

    def store(first, second, traces, text):
        run_store.STORE.keep("local", TAB, run_store.Run(TAB, {s: str(model_dir(m, TAB)) for s, m in (("A", first), ("B", second)) if m},
                                                         traces, {slot: text for slot in traces}))

    rates = cpu_rates()
    print(json.dumps({"cpu_rates": rates}), flush=True)
    rows = []
    for name in models:
        first, second, shown = VIEW_MODELS[name]
        lenses = {slot: diffllama.load(model_dir(model, "classification")) for slot, model in (("A", first), ("B", second)) if model}
        warm = story_text(lenses["A"].tokenizer, 64)
        store(first, second, {slot: lens.trace(warm) for slot, lens in lenses.items()}, warm)
        for handler in ui_views(shown, run_store.current(None, TAB).traces["A"]).values():
            in_worker(handler)
        for n in lengths:
            positions = min(lens.model.config.max_position_embeddings for lens in lenses.values())
            if n > positions:
                print(f"{name}: {n} tokens skipped: the app refuses an input past its models' {positions} positions", file=sys.stderr)
                continue
            text = story_text(lenses["A"].tokenizer, n)
            traces, trace_cpu = {}, {}
            for slot, lens in lenses.items():
                with torch.no_grad():
                    lens.model(torch.tensor([lens.tokenizer(text)["input_ids"][:64]], device=lens.device))  # warm-up
                timed = median_run([in_worker(lambda: lens.trace(text)) for _ in range(repeats)], lambda t: t.cpu)
                traces[slot], trace_cpu[slot] = timed[1], timed.cpu
                rows.append({"models": name, "n": n, "view": f"trace {slot} ({traces[slot].seq_len} tokens)", "server_s": timed[0],
                             "cpu_s": timed.cpu, "peak_gb": timed.peak / 1e9, "load": os.getloadavg()[0]})
                print(json.dumps(rows[-1]), flush=True)
            store(first, second, traces, text)
            rows += view_rows(name, n, run_store.current(None, TAB), shown, rates, trace_cpu, repeats)
            del traces
    print(views_table(rows))
    return rows


def views_table(rows: list[dict]) -> str:
    """The rows as BENCHMARKS.md's Markdown table."""
    lines = ["| models | N | view | server CPU | ÷ trace CPU | ÷ floor (floor) | wall | analysis / figures / serialise (wall) | payload | peak RSS | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        split = f"{r['analysis_s']:.3f} / {r['figure_s']:.3f} / {r['serialise_s']:.3f} s" if "analysis_s" in r else ""
        payload = f"{r['payload_bytes'] / 1e6:.2f} MB" if r.get("payload_bytes") else ""
        of_trace = f"{r['of_trace']:.2f}" if r.get("of_trace") is not None else ""
        of_floor = f"{r['of_floor']:.1f}× ({r['floor_s']:.3f} s)" if r.get("of_floor") is not None else ""
        lines.append(f"| {r['models']} | {r['n']} | {r['view']} | **{r['cpu_s']:.2f} s** | {of_trace} | {of_floor} | {r['server_s']:.2f} s | "
                     f"{split} | {payload} | {r['peak_gb']:.2f} GB | {r['load']:.1f} |")
    return "\n".join(lines)


def part_streaming(source: str, new_tokens: int, repeats: int) -> dict:
    """Tokens per second: the app's streaming runner vs transformers' generate, greedy, same prompt,
    both in a worker thread (the app's runner generates in one; see ``in_worker``), both made to
    produce ``new_tokens`` (EOS no earlier: a bundled model stops after a handful of tokens, too
    few to show a per-token cost), and the CPU-seconds of each per token."""
    import torch

    import diffllama

    lens = diffllama.load(source)
    if lens.config.vocab_size > len(lens.tokenizer):  # a random-weight model over a small tokenizer: both runs
        # generate only ids the tokenizer can show, or nothing would stream
        lens.model.generation_config.suppress_tokens = list(range(len(lens.tokenizer), lens.config.vocab_size))
    lens.model.generation_config.min_new_tokens = new_tokens
    prompt = "Anna lived in Paris. One morning Anna went to the market."
    ids = lens.tokenizer(prompt, return_tensors="pt")["input_ids"].to(lens.device)

    def transformers_generate():
        with torch.no_grad():
            out = lens.model.generate(ids, max_new_tokens=new_tokens, do_sample=False, pad_token_id=lens.config.pad_token_id)
        return out.shape[1] - ids.shape[1]

    def app_stream():
        """(tokens, seconds until the last streamed piece, seconds including the final trace, pieces)."""
        start = time.perf_counter()
        stream = lens.generate(prompt, max_new_tokens=new_tokens, greedy=True)
        last_piece, pieces = start, 0
        for _ in stream:
            last_piece, pieces = time.perf_counter(), pieces + 1
        return len(stream.result.token_ids) - stream.result.prompt_length, last_piece - start, time.perf_counter() - start, pieces

    in_worker(transformers_generate)  # warm-up
    in_worker(app_stream)
    reference, streaming, with_trace, cpu_reference, cpu_streaming = [], [], [], [], []
    for _ in range(repeats):
        timed = in_worker(transformers_generate)
        tokens = timed[1]
        reference.append(tokens / timed[0])
        cpu_reference.append(timed.cpu / tokens)
        streamed_run = in_worker(app_stream)
        streamed_tokens, streamed, total, pieces = streamed_run[1]
        if streamed_tokens != tokens:
            raise SystemExit(f"generate made {tokens} tokens and the app's stream {streamed_tokens}: not comparable")
        streaming.append(tokens / streamed)
        with_trace.append(tokens / total)
        cpu_streaming.append(streamed_run.cpu / tokens)  # the final trace included
    rates = {"transformers_generate": statistics.median(reference), "app_stream": statistics.median(streaming),
             "app_stream_and_trace": statistics.median(with_trace)}
    result = {"source": source, "new_tokens": new_tokens, "generated_tokens": tokens, "pieces": pieces, **rates,
              "ratio_streaming": rates["app_stream"] / rates["transformers_generate"],
              "ratio_with_trace": rates["app_stream_and_trace"] / rates["transformers_generate"],
              "cpu_ms_per_token_generate": statistics.median(cpu_reference) * 1e3,
              "cpu_ms_per_token_stream_and_trace": statistics.median(cpu_streaming) * 1e3, "load": os.getloadavg()[0]}
    print(json.dumps(result), flush=True)
    return result


CHROMIUM = "/usr/bin/chromium"
BROWSER_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
BUSY = """() => [...document.querySelectorAll("div[role=tabpanel] .eta-bar, div[role=tabpanel] .progress-text")]
  .some(e => e.offsetParent !== null)"""  # gradio's status tracker on an output while its event runs
LOADED = """([id, expected]) => { const imgs = [...document.querySelectorAll(`#${id} img`)];
  const seen = img => { const box = img.getBoundingClientRect(); return box.bottom > 0 && box.top < innerHeight; };
  return imgs.length >= expected && imgs.every(img => !seen(img) || img.complete && img.naturalWidth > 0); }"""
# a gallery holds every thumbnail and has drawn those in sight (the others load as they scroll into it)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class BrowserTab:
    """The classification tab in headless Chromium: a run, then each view clicked and timed until
    it is drawn (its plot's title or gallery images there, and no event running)."""

    PREFIX = "classify"

    def __init__(self, page):
        self.page = page
        page.get_by_role("tab", name="Classification").click()
        self.panel = page.locator("div[role='tabpanel']:visible")
        self.panel.locator(".model-info", has_text="parameters").first.wait_for(timeout=60_000)
        for title in ("Zoom: a region", "Overview: every layer", "A vs B:"):  # closed accordions render on opening
            self.panel.get_by_text(title).first.click()

    def _set(self, label: str, value) -> None:
        field = self.panel.get_by_label(label, exact=True).first
        field.fill(str(value))
        field.press("Enter")

    def models(self, sources: dict[str, Path]) -> None:
        """Type each slot's model (a checkpoint directory) and wait until its info line shows it."""
        for slot, source in sources.items():
            field = self.panel.get_by_label(f"Model {slot} (bundled, or a local directory / hub id)")
            field.fill(str(source))
            field.press("Enter")
            config = json.loads((source / "config.json").read_text())
            heads = config["num_attention_heads"] // (2 if config["model_type"] == "diffllama" else 1)
            self.panel.locator(".model-info", has_text=f"{config['num_hidden_layers']} layers × {heads} "
                               f"{'differential ' if config['model_type'] == 'diffllama' else ''}heads").first.wait_for(timeout=300_000)

    def _timed(self, button: str, drawn: str, argument=None, clear: str | None = None) -> float:
        """Seconds from the click on ``button`` until the JS predicate ``drawn(argument)`` holds, both
        taken in the page (so Playwright's own waits before a click do not count); then until no event
        runs, so that the next view starts on a settled page. ``clear``: a CSS selector of plot titles
        emptied before the click (a plot already showing what ``drawn`` waits for must be drawn again)."""
        target = self.panel.get_by_role("button", name=button)
        target.scroll_into_view_if_needed()
        if clear:
            self.page.evaluate(f"() => document.querySelectorAll({json.dumps(clear)}).forEach(e => e.textContent = '')")
        target.evaluate("b => b.addEventListener('click', () => { window.lensClick = performance.now(); "
                        "window.lensDrawn = null; window.lensBusySeen = false; }, {once: true, capture: true})")
        target.click()
        self.page.wait_for_function(f"""argument => {{ if (!({drawn})(argument)) return false;
            window.lensDrawn ??= performance.now(); return true; }}""", arg=argument, polling="raf", timeout=600_000)
        self.page.wait_for_function(f"() => !({BUSY})()", polling="raf", timeout=600_000)
        return self.page.evaluate("() => (window.lensDrawn - window.lensClick) / 1000")

    def run(self, text: str) -> float:
        self.panel.get_by_label("text", exact=True).fill(text)
        # the labels of the previous run stay until this one's arrive: done is the event seen running, then not
        seconds = self._timed("Classify with A and B", f"""() => {{ window.lensBusySeen ||= ({BUSY})();
            return window.lensBusySeen && !({BUSY})() && document.querySelectorAll("div[role=tabpanel] .output-class").length >= 2; }}""")
        # the views of the previous run are cleared once this one succeeds, and its maps drawn without a
        # click: wait for both and for no event running, or a new view could be wiped or raced
        self.page.wait_for_function(f"""() => document.querySelector("#{self.PREFIX}-map-A .gtitle")
            && !document.querySelector("#{self.PREFIX}-overview-A img") && !({BUSY})()""", polling="raf", timeout=600_000)
        return seconds

    def views(self, shown: str, layer: int, rows: tuple[int, int], cols: tuple[int, int], heads: int) -> dict[str, float]:
        """Seconds from click to drawn of each view; ``heads``: model A's layers × heads (its thumbnails)."""
        p = self.PREFIX
        self.panel.get_by_label(shown, exact=True).first.check()
        self._set("number input for layer", layer)
        self._set("number input for head (differential head for DiffLlama)", 0)
        for label, value in zip(("query tokens from", "to (exclusive)", "key tokens from"), (rows[0], rows[1], cols[0])):
            self.panel.get_by_label(label, exact=True).first.fill(str(value))
        self.panel.get_by_label("to (exclusive)", exact=True).nth(1).fill(str(cols[1]))
        title = lambda plot, wanted: (f"() => document.querySelector('#{p}-{plot} .gtitle')?.textContent"  # noqa: E731
                                      f".includes({json.dumps(wanted)})")
        return {
            "map view (256 blocks, with decomposition and λ)": self._timed("Show attention", title("map-A", f"layer {layer}, head 0"),
                                                                           clear=f"#{p}-map-A .gtitle"),
            "zoomed region 256 × 256, full resolution": self._timed("Recompute the region", title("zoom-A", f"queries {rows[0]}–"),
                                                                    clear=f"#{p}-zoom-A .gtitle"),
            "overview (every layer × head)": self._timed("Draw overview", LOADED, [f"{p}-overview-A", heads]),
            "compare A vs B": self._timed("Compare A and B", """() => [...document.querySelectorAll(
                "div[role=tabpanel] .js-plotly-plot")].some(e => e.innerText.includes("negative mass"))"""),
        }


def api_views(client, shown: str, text: str, sources: tuple[str, str], layer: int, rows, cols) -> dict[str, tuple[float, int]]:
    """(seconds, payload bytes) of the same run and views through the API (gradio_client), one session."""
    calls = {
        "run (classify with A and B)": ("/classify", (text, *sources)),
        "map view (256 blocks, with decomposition and λ)": ("/classify_attention", (shown, layer, 0, "diff", 256)),
        "zoomed region 256 × 256, full resolution": ("/classify_zoom", (shown, layer, 0, "diff", *rows, *cols)),
        "overview (every layer × head)": ("/classify_overview", (shown, "diff", "entropy", "layer × head")),
        "compare A vs B": ("/classify_compare", ("",)),
    }
    result = {}
    for view, (api_name, args) in calls.items():
        start = time.perf_counter()
        output = client.predict(*args, api_name=api_name)
        result[view] = (time.perf_counter() - start, payload_bytes(output))
    return result


def part_browser(models: list[str], lengths: list[int], repeats: int) -> list[dict]:
    """Each view end to end in headless Chromium (click → drawn) and through the API (round trip and
    payload), on the app in its own process: per model set and length, ``repeats`` times a fresh run
    followed by the views in the order a visitor meets them (map, a zoom into it, overview, compare:
    zoom reuses the map's layer, compare the overview's queries/keys). Medians."""
    from playwright.sync_api import sync_playwright

    from load_test import launch

    port = free_port()
    process = launch(port, DIFFLLAMA_LENS_MEMORY_BUDGET_GB=os.environ["DIFFLLAMA_LENS_MEMORY_BUDGET_GB"],
                     DIFFLLAMA_LENS_REQUEST_SECONDS=3600,  # measure slow views rather than stop them
                     DIFFLLAMA_LENS_MODEL_DIRS=os.pathsep.join(map(str, (BUNDLED, tempfile.gettempdir()))))  # checkpoint_dir's
    url = f"http://127.0.0.1:{port}/"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            page.get_by_text("DiffLlama Lens").first.wait_for()
            try:
                tab = BrowserTab(page)
                rows = [row for name in models for row in browser_rows(tab, url, name, lengths, repeats)]
            except Exception:
                shot = Path(tempfile.gettempdir()) / "lens-bench-browser-failure.png"
                page.screenshot(path=str(shot), full_page=True)
                print(f"the page when the browser benchmark failed: {shot}", file=sys.stderr)
                raise
            browser.close()
    finally:
        process.terminate()
    print(browser_table(rows))
    return rows


def browser_rows(tab: BrowserTab, url: str, name: str, lengths: list[int], repeats: int) -> list[dict]:
    """``part_browser``'s rows for one model set."""
    from gradio_client import Client
    from transformers import AutoTokenizer

    first, second, shown = VIEW_MODELS[name]  # B: the bundled Llama when the views show A alone
    sources = {"A": model_dir(first, TAB), "B": model_dir(second or "llama", TAB)}
    tab.models(sources)
    tokenizer = AutoTokenizer.from_pretrained(sources["A"])
    config = json.loads((sources["A"] / "config.json").read_text())
    trained = config["max_position_embeddings"]
    heads = config["num_hidden_layers"] * config["num_attention_heads"] // (2 if config["model_type"] == "diffllama" else 1)
    rows = []
    for n in lengths:
        if n > trained:
            print(f"{name}: {n} tokens skipped: the app refuses an input past its models' {trained} positions", file=sys.stderr)
            continue
        text, layer = story_text(tokenizer, n), 1
        query_rows, key_cols = (max(n - 256, 0), n), (max(n - 512, 0), max(n - 256, 1))
        browser_s, api_s, payload, loads = {}, {}, {}, []
        for _ in range(repeats):
            timings = {"run (classify with A and B)": tab.run(text), **tab.views(shown, layer, query_rows, key_cols, heads)}
            through_api = api_views(Client(url, verbose=False), shown, text, tuple(map(str, sources.values())),
                                    layer, query_rows, key_cols)
            loads.append(os.getloadavg()[0])
            for view, seconds in timings.items():
                browser_s.setdefault(view, []).append(seconds)
                api_s.setdefault(view, []).append(through_api[view][0])
                payload[view] = through_api[view][1]
        for view in browser_s:
            rows.append({"models": name, "n": n, "view": view, "server_s": statistics.median(api_s[view]),
                         "browser_s": statistics.median(browser_s[view]), "payload_bytes": payload[view],
                         "load": statistics.median(loads)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def browser_table(rows: list[dict]) -> str:
    lines = ["| models | N | view | API round trip | payload | browser: click → drawn | load |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['models']} | {r['n']} | {r['view']} | {r['server_s']:.2f} s | {r['payload_bytes'] / 1e6:.2f} MB | "
                     f"{r['browser_s']:.2f} s | {r['load']:.1f} |")
    return "\n".join(lines)


def streaming_table(rows: list[dict]) -> str:
    lines = ["| model | tokens (pieces) | `generate` | app stream | ratio | ratio with the final trace | CPU ms a token: generate / stream + trace | load |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {Path(r['source']).name} | {r['generated_tokens']} ({r['pieces']}) | {r['transformers_generate']:.0f} tok/s | "
                     f"{r['app_stream']:.0f} tok/s | **{r['ratio_streaming']:.2f}×** | {r['ratio_with_trace']:.2f}× | "
                     f"{r['cpu_ms_per_token_generate']:.1f} / {r['cpu_ms_per_token_stream_and_trace']:.1f} | {r['load']:.1f} |")
    return "\n".join(lines)


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


def part_app_outliers(repeats: int) -> list[dict]:
    """The activation outliers of the bundled pair at 2K: the server's CPU-seconds for
    ``/classify_outliers`` through the app (its process's CPU before and after the call, after a fresh
    ``/classify``) against the same handler run alone in a worker thread (``in_worker``)."""
    import psutil
    import torch
    from gradio_client import Client

    import diffllama
    from components import run_store
    from components.panel import compare
    from load_test import launch

    sources = {"A": model_dir("diffllama", TAB), "B": model_dir("llama", TAB)}
    lenses = {slot: diffllama.load(source) for slot, source in sources.items()}
    text = story_text(lenses["A"].tokenizer, 2048)
    rows = []
    for _ in range(repeats):
        traces = {slot: lens.trace(text) for slot, lens in lenses.items()}
        run_store.STORE.keep("local", TAB, run_store.Run(TAB, {s: str(p) for s, p in sources.items()}, traces, {s: text for s in traces}))
        with torch.no_grad():
            alone = in_worker(lambda: compare.outliers(TAB))
        rows.append({"where": "handler alone", "cpu_s": alone.cpu, "wall_s": alone[0], "load": os.getloadavg()[0]})
        print(json.dumps(rows[-1]), flush=True)
    port = free_port()
    process = launch(port, DIFFLLAMA_LENS_REQUEST_SECONDS=3600)
    server = psutil.Process(process.pid)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        for _ in range(repeats):
            client.predict(text, "diffllama-cls", "llama-cls", api_name="/classify")  # a fresh run: nothing kept
            cpu, start = sum(server.cpu_times()[:2]), time.perf_counter()
            client.predict(api_name="/classify_outliers")
            rows.append({"where": "through the app", "cpu_s": sum(server.cpu_times()[:2]) - cpu, "wall_s": time.perf_counter() - start,
                         "load": os.getloadavg()[0]})
            print(json.dumps(rows[-1]), flush=True)
    finally:
        process.terminate()
    return rows


def part_block(repeats: int = 50) -> dict:
    """Where a pass over the maps (overview, compare) spends its time: each step on one block of logits
    as ``Trace.map_blocks`` makes them on a CPU (``trace.blocks.block_values``: 2^19 numbers, here 4 softmax
    heads = 2 differential heads × 64 query rows × 2048 keys, head_dim 64), in a worker thread (one core
    for element-wise work, as the app's threads run). Milliseconds per block, mean of ``repeats``."""
    import torch

    import numpy as np

    from diffllama.analysis import row_loops, row_statistics
    from diffllama.analysis.head_stats import NO_POOLING

    generator = torch.Generator().manual_seed(0)
    heads, rows, keys, dim = 4, 64, 2048, 64
    query, keys_t = torch.randn(heads, rows, dim, generator=generator), torch.randn(heads, dim, keys, generator=generator)
    query.mul_(dim ** -0.5)  # the trace keeps its queries scaled by head_dim^-0.5 (unscaled, the softmax would meet denormals)
    logits = torch.empty(heads, rows, keys)

    def products():
        for head in range(heads):
            torch.mm(query[head], keys_t[head], out=logits[head])

    products()
    probs = torch.softmax(logits, -1)
    diff = torch.sub(probs[0::2], probs[1::2], alpha=0.5)
    ends, found = np.full(rows, keys), np.empty((4, heads // 2, rows))
    steps = {"logits (a product per head)": products, "softmax": lambda: torch.softmax(logits, -1),
             "A1 − λ·A2": lambda: torch.sub(probs[0::2], probs[1::2], alpha=0.5),
             "row statistics of D (entropy, top-5, first token, negative)": lambda: row_statistics(diff, 5, signed=True),
             "from the logits: softmax, D and its statistics in one pass (what head statistics run on the CPU)":
                 lambda: row_loops.diff_logit_rows(logits.numpy(), ends, 0.5, 5, found, *NO_POOLING)}
    result = {}
    for name, step in steps.items():
        step()  # warm-up
        result[name] = in_worker(lambda: [step() for _ in range(repeats)]).cpu / repeats * 1e3
    print("| step, per block of 2^19 logits | ms |\n|---|---|\n" + "\n".join(f"| {k} | {v:.2f} |" for k, v in result.items()))
    return result


PARTS = ["forward", "maps", "views", "block", "browser", "streaming", "endpoints", "app-outliers"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", nargs="+", choices=PARTS + ["all"], default=["all"],
                        help="what to measure (several in one run: e.g. --part browser streaming for BENCHMARKS.md's tables)")
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES))
    parser.add_argument("--lengths", nargs="+", type=int, default=[512, 2048, 4096, 8192])
    parser.add_argument("--view-models", nargs="+", choices=list(VIEW_MODELS), default=list(VIEW_MODELS))
    parser.add_argument("--view-lengths", nargs="+", type=int, default=[512, 2048, 4096])
    parser.add_argument("--repeats", type=int, default=3, help="views: runs of each trace and view (the median's row); browser: runs per model set and length (medians)")
    parser.add_argument("--stream-models", nargs="+", default=[str(BUNDLED / "diffllama-lm"), "12x1024"],
                        help="checkpoint directories, or a shape name for a random-weight model")
    parser.add_argument("--out", default=None, help="write all results as JSON here")
    parser.add_argument("--one", nargs=3, metavar=("SHAPE", "N", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_forward(args.one[0], int(args.one[1]), args.one[2])))
        return
    parts = PARTS if "all" in args.part else args.part
    results = {}
    if "forward" in parts:
        results["forward"] = part_forward(args.shapes, args.lengths)
    if "maps" in parts:
        results["maps"] = part_maps("12x1024", 4096)
    if "views" in parts:
        results["views"] = part_views(args.view_models, args.view_lengths, args.repeats)
    if "block" in parts:
        results["block"] = part_block()
    if "browser" in parts:
        results["browser"] = part_browser(args.view_models, args.view_lengths, args.repeats)
    if "streaming" in parts:
        results["streaming"] = [part_streaming(str(checkpoint_dir(m)) if m in SHAPES else m, 64, 5) for m in args.stream_models]
        print(streaming_table(results["streaming"]))
    if "endpoints" in parts:
        results["endpoints"] = part_endpoints(5)
    if "app-outliers" in parts:
        results["app-outliers"] = part_app_outliers(args.repeats)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
