"""Run a study from the command line; under ``accelerate launch`` the examples are split across the
processes and the first one writes the output.

    python -m diffllama.study diffllama-lm llama-lm persimmon-lm --examples 200 --fillers 4 16 --out study
    python -m diffllama.study diffllama-lm llama-lm --quantize int8   # each model beside its int8 copy
    accelerate launch --multi_gpu --num_processes 2 -m diffllama.study diffllama-lm llama-lm --examples 200
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import torch
from accelerate import PartialState

from ..interventions.quantize import SCHEMES, SUFFIX
from ..loading import load
from ..provenance import provenance
from ..registry import resolve
from . import report, run_study
from .examples import DEPTHS, read_jsonl, retrieval_examples
from .statistics import RESAMPLES


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m diffllama.study", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="bundled model names (e.g. diffllama-lm), checkpoint directories or hub ids: "
                                                  "language models (retrieval accuracy) or QA models (exact match)")
    parser.add_argument("--jsonl", type=Path, help='your own inputs: one {"context", "question", "answer"} object a line '
                                                   "(default: the generated multi-needle retrieval set)")
    parser.add_argument("--examples", type=int, default=200, help="generated inputs (default 200)")
    parser.add_argument("--needles", type=int, default=4, help="cities' magic numbers per context, one asked (default 4)")
    parser.add_argument("--lookalikes", type=int, default=1, help="near-miss facts about the asked city (default 1)")
    parser.add_argument("--fillers", type=int, nargs="+", default=[28], help="haystack sentences (≈ 9 tokens each) per "
                        "context; several values give several context lengths (default 28: ≈ 260 tokens)")
    parser.add_argument("--depths", type=float, nargs="+", default=list(DEPTHS), help="answer depths, 0 = start, 1 = end")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", default="auto", help="model dtype: auto (bfloat16 on CUDA, float32 on CPU) or e.g. float32")
    parser.add_argument("--resamples", type=int, default=RESAMPLES, help="bootstrap resamples (default 2000)")
    parser.add_argument("--query", type=int, help="the query token: a position, or counted from the end when negative "
                        "(default: the last input token, the one whose next-token prediction is the answer's first token)")
    parser.add_argument("--skip-outliers", action="store_true", help="leave out Table 5 (activation outliers: two more "
                        "passes over every logit and hidden state)")
    parser.add_argument("--quantize", choices=list(SCHEMES), help="also run each model quantized (source#SCHEME, "
                        "torchao through transformers), side by side with the full one")
    parser.add_argument("--out", type=Path, default=Path("study"), help="writes OUT.json and OUT.md (default: study)")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    arguments = parse(argv)
    depths = tuple(arguments.depths)
    examples = read_jsonl(arguments.jsonl) if arguments.jsonl else retrieval_examples(
        arguments.examples, arguments.needles, tuple(arguments.fillers), depths, arguments.seed, arguments.lookalikes)
    state = PartialState(cpu=not torch.cuda.is_available())
    variants = ("", SUFFIX + arguments.quantize) if arguments.quantize else ("",)  # each model, then its quantized copy
    models = {name + variant: load(resolve(name, "generation") + variant, device=str(state.device), dtype=arguments.dtype)
              for name in arguments.models for variant in variants}
    result = run_study(models, examples, depths, arguments.resamples,
                       progress=lambda fraction, text: print(f"[{fraction:4.0%}] {text}", flush=True),
                       outliers=not arguments.skip_outliers, query=arguments.query)
    if state.is_main_process:
        result["command"] = {key: str(value) if isinstance(value, Path) else value for key, value in vars(arguments).items()}
        # the same record the app's exports carry: models, a hash of the command's inputs, versions, time
        inputs = {key: value for key, value in result["command"].items() if key != "out"}
        result["provenance"] = asdict(provenance({f"model {i + 1}": name for i, name in enumerate(models)}, inputs))
        arguments.out.with_suffix(".json").write_text(json.dumps(result, indent=1, ensure_ascii=False))
        arguments.out.with_suffix(".md").write_text(report.markdown(result))
        print(f"wrote {arguments.out.with_suffix('.json')} and {arguments.out.with_suffix('.md')}")
    return result


if __name__ == "__main__":
    main()
