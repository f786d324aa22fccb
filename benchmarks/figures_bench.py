"""CPU-seconds of the map view's figures at ≈ 2K tokens on the bundled pair: the token labels the
records carry (``analysis.attention_map`` / ``attention_region``'s labels), building the figures
(``components.figures``) and serialising them as gradio's ``gr.Plot`` does (``figure.to_json()``).
The maps' numbers are computed once beforehand, so only the figure side is timed.

    python benchmarks/figures_bench.py [--tokens 2048] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]


def cpu(fn, repeats: int) -> tuple[float, object]:
    """(median CPU-seconds of ``fn()`` over ``repeats`` calls, its last result)."""
    times, result = [], None
    for _ in range(repeats):
        start = time.process_time()
        result = fn()
        times.append(time.process_time() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import torch

    import diffllama
    from bench import model_dir, story_text
    from components import figures
    from diffllama import analysis
    from diffllama.analysis import maps
    from diffllama.provenance import provenance

    lenses = {slot: diffllama.load(model_dir(name, "classification")) for slot, name in (("A", "diffllama"), ("B", "llama"))}
    text = story_text(lenses["A"].tokenizer, args.tokens)
    with torch.no_grad():
        traces = {slot: lens.trace(text) for slot, lens in lenses.items()}
    a, b = traces["A"], traces["B"]
    layer, n = a.num_layers // 2, a.seq_len
    records = {"A": analysis.attention_map(a, layer, 0, "diff", 256), "B": analysis.attention_map(b, layer, 0, "softmax", 256),
               **{k: analysis.attention_map(a, layer, 0, k, 128) for k in ("a1", "a2", "diff")}}
    region = analysis.attention_region(a, layer, 0, "diff", (n - 256, n), (n - 512, n - 256))

    def labels():  # what the map view's records spend on token labels (5 maps; the zoom's two regions)
        for trace, record in ((a, records["A"]), (b, records["B"]), *((a, records[k]) for k in ("a1", "a2", "diff"))):
            maps.block_labels(trace, record.edges)
        for trace in (a, b):
            maps.block_labels(trace, list(range(trace.seq_len + 1)))

    record = provenance({"A": "diffllama-cls", "B": "llama-cls"}, {"text": text}, layer, 0, "diff", "http://localhost/?tab=x")

    def build():  # as the map view returns them: stamped with their provenance
        shown = [figures.attention_heatmap(records["A"], "Model A · "), figures.attention_heatmap(records["B"], "Model B · "),
                 *figures.decomposition({k: records[k] for k in ("a1", "a2", "diff")}, "A · "),
                 figures.lambda_profile({"A": (a.lambdas, a.lambda_inits)})]
        return [figures.provenance_note(figure, record) for figure in shown]

    def zoom():
        return [figures.provenance_note(figures.region_heatmap(region, "Model A · "), record)]

    print(f"{n} tokens (A), {b.seq_len} (B); median CPU-seconds of {args.repeats}")
    for name, fn in (("token labels of the map view and zoom", labels), ("map view figures (2 maps, 3 parts, λ; stamped)", build),
                     ("zoom figure 256 × 256", zoom)):
        seconds, result = cpu(fn, args.repeats)
        print(f"{name}: {seconds:.4f} s")
        if result is not None:
            seconds, payload = cpu(lambda: [figure.to_json() for figure in result], args.repeats)
            print(f"  serialised as gr.Plot does (to_json): {seconds:.4f} s, {sum(map(len, payload)):,} bytes")


if __name__ == "__main__":
    main()
