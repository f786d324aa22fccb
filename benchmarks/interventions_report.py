"""Interventions on the bundled DiffLlama / Llama pair over held-out retrieval prompts (seed 1; the
family trained on seed 0): which heads carry the answer by activation patching (and whether attention
to the answer alone would have said so), where the answer emerges by the logit lens, and full vs
quantized copies (KL, top-1 agreement, retrieval accuracy, activation outliers). Prints Markdown.

    nice python benchmarks/interventions_report.py --prompts 12 --fillers 8
"""

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import diffllama  # noqa: E402
from diffllama import analysis, interventions  # noqa: E402
from diffllama.interventions.patching import retrieval_pair  # noqa: E402
from diffllama.interventions.quantize import missing_kernels  # noqa: E402
from diffllama.records import ReferenceSpan  # noqa: E402
from diffllama.study import retrieval_examples  # noqa: E402
from diffllama.study.measure import found_answer, prompt  # noqa: E402

MODELS = Path(__file__).resolve().parents[1] / "assets" / "models"
PAIR = ("diffllama-lm", "llama-lm")
SCHEMES = ("int8", "int8-dynamic", "int4")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    rank = lambda x: np.argsort(np.argsort(x, kind="stable"), kind="stable")  # noqa: E731
    return float(np.corrcoef(rank(a.ravel()), rank(b.ravel()))[0, 1])


def heads_and_lens(lens, examples) -> dict:
    """Patching shares, attention to the answer (absolute reading, from the last token) and the logit lens, per prompt."""
    shares, attention, emergence, ranks, skipped = [], [], [], [], 0
    for example in examples:
        pair = retrieval_pair(example.context, example.question, example.lead_in, lens.tokenizer)
        if pair is None:
            skipped += 1
            continue
        clean_text, corrupted_text, answer, foil = pair
        clean, corrupted = lens.trace(clean_text), lens.trace(corrupted_text)
        token = interventions.answer_id(lens, clean_text, answer)
        result = interventions.activation_patching(lens, clean, corrupted, token, interventions.answer_id(lens, corrupted_text, foil))
        shares.append(result.heads)
        reference = ReferenceSpan(example.answer_start, example.answer_end, 0, "gold answer")
        attention.append(analysis.reference_allocation(clean, reference, (0, len(example.context))).answer_mass["absolute"])
        read = interventions.logit_lens(lens, clean, token)
        emergence.append(read.emergence)
        ranks.append(read.rank)
    return dict(shares=np.array(shares), attention=np.array(attention), emergence=emergence, ranks=np.array(ranks),
                skipped=skipped)


def quantized_rows(name: str, examples) -> list[list]:
    full = diffllama.load(MODELS / name)
    rows, texts = [], [prompt(example) for example in examples]
    for scheme in SCHEMES:
        if missing_kernels(scheme):
            rows.append([name, scheme, "refused: its kernels are missing here", "", "", "", "", ""])
            continue
        quantized = diffllama.load(f"{MODELS / name}#{scheme}", name=f"{name}#{scheme}")
        kl, agreement, query_kl, found = [], [], [], []
        outliers = {"full": [], scheme: []}
        for example, text in zip(examples, texts):
            result = interventions.compare_quantized(full, quantized, text, interventions.answer_id(full, text, example.answer))
            kl.append(np.mean(result.kl))
            query_kl.append(result.kl[-1])
            agreement.append(result.top1_agreement)
            trace = quantized.trace(text)
            found.append(found_answer(quantized, example, trace, len(quantized.tokenizer(" " + example.answer, add_special_tokens=False)["input_ids"])))
            outliers["full"].append(result.outliers[0])
            outliers[scheme].append(result.outliers[1])
        hidden = lambda stats: max(s.hidden_states["top-1"] for s in stats)  # noqa: E731
        logits = lambda stats: max(s.attention_logits["top-1"] for s in stats)  # noqa: E731
        rows.append([name, scheme, f"{np.mean(kl):.2e}", f"{np.mean(query_kl):.2e}", f"{np.mean(agreement):.4f}",
                     f"{np.mean(found):.3f}", f"{hidden(outliers['full']):.1f} → {hidden(outliers[scheme]):.1f}",
                     f"{logits(outliers['full']):.2f} → {logits(outliers[scheme]):.2f}"])
    found_full = [found_answer(full, e, full.trace(t), len(full.tokenizer(" " + e.answer, add_special_tokens=False)["input_ids"]))
                  for e, t in zip(examples, texts)]
    rows.insert(0, [name, "full", "0", "0", "1", f"{np.mean(found_full):.3f}", "", ""])
    return rows


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=12)
    parser.add_argument("--fillers", type=int, default=8, help="haystack sentences per context (≈ 9 tokens each)")
    parser.add_argument("--quantized-prompts", type=int, default=None, help="prompts for the quantization table (default: --prompts)")
    arguments = parser.parse_args(argv)
    examples = retrieval_examples(arguments.prompts, fillers=(arguments.fillers,), seed=1)
    wall, cpu = time.perf_counter(), cpu_seconds()
    print(f"## Interventions on the bundled pair: {arguments.prompts} held-out retrieval prompts (seed 1), "
          f"{arguments.fillers} filler sentences\n")
    print("### Which heads carry the answer (activation patching clean → corrupted: another needle city asked)\n")
    rows, lens_rows = [], []
    for name in PAIR:
        lens = diffllama.load(MODELS / name)
        found = heads_and_lens(lens, examples)
        shares, attention = found["shares"].mean(0), found["attention"].mean(0)  # [L, H]
        order = np.argsort(-shares, axis=None)[:3]
        top = ", ".join(f"L{l}H{h} {shares[l, h]:.2f}" for l, h in zip(*np.unravel_index(order, shares.shape)))
        by_attention = np.unravel_index(int(np.argmax(attention)), attention.shape)
        top_patch = np.unravel_index(int(order[0]), shares.shape)
        rows.append([name, len(found["shares"]), top, f"L{by_attention[0]}H{by_attention[1]} {attention[by_attention]:.2f}",
                     "yes" if by_attention == top_patch else "no", f"{spearman(shares, attention):+.2f}",
                     f"{int((shares > 0.2).sum())}/{shares.size}"])
        emergence = [e for e in found["emergence"] if e is not None]
        labels = ["emb"] + [f"L{l}" for l in range(found["ranks"].shape[1] - 1)]
        lens_rows.append([name, ", ".join(f"{label} {np.median(found['ranks'][:, i]):.0f}" for i, label in enumerate(labels)),
                          ", ".join(f"{labels[e]}: {emergence.count(e)}" for e in sorted(set(emergence))),
                          len(found["emergence"]) - len(emergence)])
        print(f"{name}: mean recovered share per layer × head\n```\n{np.array2string(shares, precision=2, suppress_small=True)}\n```")
        print(f"{name}: mean attention to the answer (absolute reading) per layer × head\n```\n"
              f"{np.array2string(attention, precision=2, suppress_small=True)}\n```\n")
    print(table(["model", "prompts", "top heads by patching (mean share)", "top head by attention to answer",
                 "same head?", "Spearman(share, attention) over heads", "heads with share > 0.2"], rows))
    print("\n### Where the answer emerges (logit lens at the last token)\n")
    print(table(["model", "median rank of the answer per layer", "emergence layer: prompts", "never top"], lens_rows))
    print("\n### Full vs quantized (torchao through transformers)\n")
    quantized = retrieval_examples(arguments.quantized_prompts or arguments.prompts, fillers=(arguments.fillers,), seed=1)
    print(table(["model", "weights", "mean KL (all positions)", "KL at the query", "top-1 agreement", "retrieval accuracy",
                 "hidden-state top-1 (full → quantized)", "attention-logit top-1"],
                [row for name in PAIR for row in quantized_rows(name, quantized)]))
    print(f"\nwall {time.perf_counter() - wall:.0f} s, CPU {cpu_seconds() - cpu:.0f} s")


if __name__ == "__main__":
    main()
