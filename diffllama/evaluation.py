"""Held-out evaluation of the bundled family through the app's own runners, and the model cards.

    python -m diffllama.evaluation            # evaluates assets/models/* and rewrites the cards
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from pathlib import Path

import torch

from . import analysis, corpus
from .loading import load

ROOT = Path(__file__).resolve().parents[1]
DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)


def perplexity(lens, texts: list[str], seq_len: int = 256) -> float:
    """exp(mean next-token loss) over the held-out documents packed like the training data."""
    ids = []
    for text in texts:
        ids += lens.tokenizer(text)["input_ids"] + [lens.tokenizer.eos_token_id]
    windows = torch.tensor(ids[: len(ids) // seq_len * seq_len]).view(-1, seq_len)
    losses = []
    with torch.no_grad():
        for batch in windows.split(16):
            losses.append(lens.model(input_ids=batch, labels=batch).loss.item() * len(batch))
    return math.exp(sum(losses) / len(windows))


def retrieval_accuracy(lens, examples: list[corpus.Retrieval]) -> float:
    """Share of questions whose greedy continuation starts with the right number."""
    hits = 0
    for example in examples:
        stream = lens.generate(f"{example.context} {example.question}", max_new_tokens=4, greedy=True)
        list(stream)
        hits += stream.result.text.strip().startswith(example.answer_text)
    return hits / len(examples)


def attention_allocation(lens, examples: list[corpus.Retrieval]) -> dict:
    """The paper's Table 3 measurement: attention from the last question token to the answer
    number vs to the rest of the context, averaged over layers and heads, overall and per depth."""
    by_depth: dict[float, list[tuple[float, float]]] = {d: [] for d in DEPTHS}
    for example in examples:
        text = f"{example.context} {example.question}"
        trace = lens.trace(text)
        answer = analysis.token_spans(trace, example.answer.start, example.answer.end)
        context = (1, analysis.token_spans(trace, len(example.context) - 1, len(example.context))[1])
        result = analysis.span_allocation(trace, [trace.seq_len - 1], answer, context)
        nearest = min(DEPTHS, key=lambda d: abs(d - example.depth))
        by_depth[nearest].append((result.mean_answer, result.mean_noise))
    everything = [pair for pairs in by_depth.values() for pair in pairs]
    mean = lambda pairs, i: sum(p[i] for p in pairs) / len(pairs) if pairs else float("nan")  # noqa: E731
    return {"answer": mean(everything, 0), "noise": mean(everything, 1),
            "answer_by_depth": [mean(by_depth[d], 0) for d in DEPTHS],
            "noise_by_depth": [mean(by_depth[d], 1) for d in DEPTHS]}


def classification_scores(lens, examples: list[corpus.Review]) -> dict:
    correct = sum(lens.classify(r.text).labels[0].label == r.label for r in examples)
    majority = Counter(r.label for r in examples).most_common(1)[0][1]
    return {"accuracy": correct / len(examples), "majority_baseline": majority / len(examples)}


def token_f1(prediction: str, truth: str) -> float:
    predicted, gold = prediction.split(), truth.split()
    common = sum((Counter(predicted) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def qa_scores(lens, examples: list[corpus.Retrieval]) -> dict:
    exact, f1 = 0.0, 0.0
    for example in examples:
        spans = lens.answer(example.question, example.context, top_k=1).spans
        prediction = spans[0].text.strip() if spans else ""
        exact += prediction == example.answer_text
        f1 += token_f1(prediction, example.answer_text)
    # baselines: a random span is almost never right; picking one of the 3 look-alike needles' numbers
    # at random is right a third of the time (a model that finds numbers but cannot match the key)
    return {"exact_match": exact / len(examples), "f1": f1 / len(examples), "random_needle_exact_match": 1 / 3}


def entity_f1(lens, examples: list[corpus.Tagged]) -> dict:
    """Micro entity-level F1: an entity counts when its label and exact span both match."""
    true_positive = predicted = gold = 0
    for example in examples:
        found = {(e.label, e.start, e.end) for e in lens.tag(example.text).entities}
        truth = {(e.label, e.start, e.end) for e in example.entities}
        true_positive += len(found & truth)
        predicted += len(found)
        gold += len(truth)
    precision = true_positive / predicted if predicted else 0.0
    recall = true_positive / gold if gold else 0.0
    return {"entity_f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            "precision": precision, "recall": recall}


def evaluate(directory: Path, samples: int) -> dict:
    lens = load(directory)
    seed = corpus.HELD_OUT_SEED
    if lens.task == "generation":
        from .training import corpus_texts

        retrievals = corpus.generate("retrieval", seed, samples)
        return {"perplexity": perplexity(lens, corpus_texts(seed, stories=samples * 2, retrievals=samples)),
                "uniform_perplexity": len(lens.tokenizer),
                "retrieval_accuracy": retrieval_accuracy(lens, retrievals[: samples // 2]),
                "attention_allocation": attention_allocation(lens, retrievals)}
    if lens.task == "classification":
        return classification_scores(lens, corpus.generate("review", seed, samples * 2))
    if lens.task == "qa":
        return qa_scores(lens, corpus.generate("retrieval", seed, samples))
    return entity_f1(lens, corpus.generate("tagged", seed, samples))


def card(directory: Path, record: dict, results: dict) -> str:
    arch, stage = record["arch"], record["stage"]
    title = {"lm": "causal language model", "cls": "sentiment classifier", "tag": "entity tagger",
             "qa": "extractive question answering"}[stage]
    lines = [f"# {directory.name}: {arch} {title}", "",
             "Part of DiffLlama Lens's bundled family: DiffLlama, Llama and Persimmon trained on the same "
             "synthetic data with the same tokenizer, recipe, seed and (within 1 %) parameter count, so "
             "differences between them come from the attention mechanism. Trained on CPU by "
             "`python -m diffllama.training`; evaluated by `python -m diffllama.evaluation`.", "",
             "## Data", "Generated by `diffllama/corpus.py` (seed 0 for training, seed 1 held out): short stories, "
             "key retrieval with look-alike needles among filler sentences (\"The magic number of Lyon is 4821.\"), "
             "reviews with negation and irrelevant sentences, sentences tagged PER/LOC/ORG/NUM/DATE.", "",
             "## Recipe and size",
             f"- parameters: {record['parameters']:,}",
             f"- shape: {json.dumps(record['shape'])}",
             f"- recipe: {json.dumps(record['recipe'])}",
             f"- stage: {stage}" + (" (fine-tuned from the same architecture's LM)" if stage != "lm" else ""),
             f"- training time: {record['seconds'] / 60:.1f} min on 2 CPU cores; final training loss {record['final_loss']:.3f}",
             "", "## Held-out results", "```json", json.dumps(results, indent=2), "```", ""]
    return "\n".join(lines)


def comparison_table(results: dict[str, dict]) -> str:
    def get(name, *keys):
        value = results.get(name, {})
        for key in keys:
            value = value.get(key, {}) if isinstance(value, dict) else {}
        return f"{value:.3f}" if isinstance(value, float) else "—" if value == {} else str(value)

    rows = ["| metric | " + " | ".join(("diffllama", "llama", "persimmon")) + " |", "|---|---|---|---|"]
    metrics = [("LM perplexity (uniform 2048) ↓", "lm", ("perplexity",)),
               ("retrieval accuracy, greedy generation ↑", "lm", ("retrieval_accuracy",)),
               ("attention to answer ↑", "lm", ("attention_allocation", "answer")),
               ("attention noise ↓", "lm", ("attention_allocation", "noise")),
               ("classification accuracy ↑", "cls", ("accuracy",)),
               ("classification majority baseline", "cls", ("majority_baseline",)),
               ("QA exact match ↑ (a random needle's number: 0.333)", "qa", ("exact_match",)), ("QA F1 ↑", "qa", ("f1",)),
               ("tagging entity F1 ↑", "tag", ("entity_f1",))]
    for label, stage, keys in metrics:
        rows.append(f"| {label} | " + " | ".join(get(f"{arch}-{stage}", *keys) for arch in ("diffllama", "llama", "persimmon")) + " |")
    depth_rows = ["", "Attention allocation by depth of the answer in the context (0 = start, 1 = end), "
                  "last question token → answer number vs rest of context, mean over layers and heads:", "",
                  "| model | " + " | ".join(f"depth {d}" for d in DEPTHS) + " |", "|---|" + "---|" * len(DEPTHS)]
    for arch in ("diffllama", "llama", "persimmon"):
        allocation = results.get(f"{arch}-lm", {}).get("attention_allocation")
        if allocation:
            cells = [f"{a:.3f} / {n:.3f}" for a, n in zip(allocation["answer_by_depth"], allocation["noise_by_depth"])]
            depth_rows.append(f"| {arch} (answer / noise) | " + " | ".join(cells) + " |")
    return "\n".join(rows + depth_rows)


def evaluate_family(out: Path, samples: int = 150) -> dict:
    results = {}
    for directory in sorted(p for p in out.iterdir() if (p / "training.json").exists()):
        print(f"evaluating {directory.name}", flush=True)
        results[directory.name] = evaluate(directory, samples)
        record = json.loads((directory / "training.json").read_text())
        (directory / "README.md").write_text(card(directory, record, results[directory.name]))
    (out / "results.json").write_text(json.dumps(results, indent=2))
    minutes = sum(json.loads((d / "training.json").read_text())["seconds"] for d in out.iterdir()
                  if (d / "training.json").exists()) / 60
    summary = ["# Bundled models", "", f"Trained by `python -m diffllama.training` ({minutes:.0f} minutes of training "
               "on 2 CPU cores in all; `--resume` keeps finished stages), evaluated on held-out data (seed 1) by "
               "`python -m diffllama.evaluation`. Each directory is a transformers checkpoint with its own model card.",
               "", comparison_table(results), ""]
    (out / "README.md").write_text("\n".join(summary))
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "assets" / "models")
    parser.add_argument("--samples", type=int, default=150)
    arguments = parser.parse_args()
    evaluate_family(arguments.out, arguments.samples)
