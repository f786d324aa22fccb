"""Held-out evaluation of the bundled family (data from a seed never used in training), the model
cards and the comparison table. Heads are evaluated through the lens's own runners
(``LensModel.classify / answer / tag``), so the numbers are those the app shows.

    python -m diffllama.family.evaluate                    # assets/models: results.json, cards, README table
    python -m diffllama.family.evaluate --samples 50       # a quicker, noisier pass
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from . import corpus, features

ROOT = Path(__file__).resolve().parents[2]
RETRIEVAL_LENGTHS = {256: 28, 512: 60, 1024: 125, 2048: 245}  # context tokens (≈) -> haystack sentences
NUMBER = re.compile(r"\d+")


# --- language models ----------------------------------------------------------------------------
@torch.no_grad()
def generated_answer(model, tokenizer, prompt: str, max_new_tokens: int) -> str:
    """Greedy continuation of ``prompt`` (transformers' generate), as text."""
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"].to(model.device)
    out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def retrieved(example: corpus.QAExample, continuation: str, with_lead_in: bool) -> bool:
    """Exact match: with the lead-in, the continuation's first number; bare, the number the model
    states after restating the fact (its first number)."""
    found = NUMBER.search(continuation)
    return found is not None and found.group() == example.answer_text and (
        not with_lead_in or continuation[:found.start()].strip() == "")


def retrieval_accuracy(model, tokenizer, examples: list[corpus.QAExample], with_lead_in: bool = True) -> float:
    """Share of ``examples`` whose asked number the model generates greedily."""
    budget = 6 if with_lead_in else 16  # a number and a period; or "The magic number of X is N."
    hits = [retrieved(e, generated_answer(model, tokenizer, corpus.retrieval_prompt(e, with_lead_in), budget), with_lead_in)
            for e in examples]
    return sum(hits) / len(hits)


@torch.no_grad()
def perplexity(model, tokenizer, texts: list[str], batch: int = 16) -> float:
    """exp(mean next-token cross-entropy) over the tokens of ``texts`` ("<s> text </s>")."""
    total, count = 0.0, 0
    for i in range(0, len(texts), batch):
        rows = [tokenizer(t)["input_ids"] + [tokenizer.eos_token_id] for t in texts[i:i + batch]]
        width = max(map(len, rows))
        ids = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows], device=model.device)
        mask = torch.tensor([[1.0] * len(r) + [0.0] * (width - len(r)) for r in rows], device=model.device)
        logits = model(input_ids=ids).logits[:, :-1].float()  # causal: padding after a row never reaches it
        losses = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="none")
        total += float((losses * mask[:, 1:].flatten()).sum())
        count += int(mask[:, 1:].sum())
    return math.exp(total / count)


def retrieval_set(seed: int, samples: int, length: int, needles: int = 4, lookalikes: int = 1) -> list[corpus.QAExample]:
    """``samples`` retrieval examples of ≈ ``length`` context tokens, the answer spread evenly over
    depths 0, 0.25, 0.5, 0.75, 1."""
    rng = random.Random(f"retrieval-set-{seed}-{length}-{needles}")
    depths = [0.0, 0.25, 0.5, 0.75, 1.0]
    return [corpus.retrieval(rng, needles=needles, fillers=RETRIEVAL_LENGTHS[length], depth=depths[i % 5],
                             lookalikes=lookalikes) for i in range(samples)]


STORY_OPENINGS = ("Once upon a time", "One morning", "Long ago, in a small village", "The old fisherman",
                  "On a rainy day")
STORY_TOKENS = 48


def distinct_bigrams(ids: list[int]) -> float:
    """Share of a continuation's token bigrams that are distinct: 1 never repeats, a loop tends to 0."""
    bigrams = list(zip(ids, ids[1:]))
    return len(set(bigrams)) / max(1, len(bigrams))


@torch.no_grad()
def story_samples(model, tokenizer) -> dict:
    """Greedy ``STORY_TOKENS``-token continuations of ``STORY_OPENINGS`` (a model that loops writes
    the same sentence again and again) with their distinct-bigram shares and the mean of them."""
    samples = []
    for opening in STORY_OPENINGS:
        ids = tokenizer(opening, return_tensors="pt")["input_ids"].to(model.device)
        out = model.generate(ids, max_new_tokens=STORY_TOKENS, min_new_tokens=STORY_TOKENS, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)[0, ids.shape[1]:].tolist()
        samples.append({"opening": opening, "text": tokenizer.decode(out, skip_special_tokens=True),
                        "distinct_bigrams": round(distinct_bigrams(out), 3)})
    return {"samples": samples, "distinct_bigrams": round(sum(s["distinct_bigrams"] for s in samples) / len(samples), 3)}


def evaluate_lm(directory: Path, samples: int, device: str = "auto") -> dict:
    from diffllama import load  # the lens's own loader: what the app runs

    lens = load(directory, device=device, dtype="float32")
    model, tokenizer = lens.model, lens.tokenizer
    stories = [s.text for s in corpus.generate("story", corpus.HELD_OUT_SEED, samples * 2)]
    result = {"perplexity": perplexity(model, tokenizer, stories), "uniform_perplexity": model.config.vocab_size,
              "stories": story_samples(model, tokenizer), "retrieval": {}}
    for length in RETRIEVAL_LENGTHS:
        examples = retrieval_set(corpus.HELD_OUT_SEED, samples, length)
        tokens = sum(len(tokenizer(e.context)["input_ids"]) for e in examples) / len(examples)
        result["retrieval"][str(length)] = {
            "context_tokens": round(tokens), "samples": len(examples), "needles": 4, "lookalikes": 1,
            "lead_in": retrieval_accuracy(model, tokenizer, examples, True),
            "bare": retrieval_accuracy(model, tokenizer, examples, False)}
    return result


# --- heads (through the lens's runners) ---------------------------------------------------------
def token_f1(prediction: str, truth: str) -> float:
    predicted, true = prediction.split(), truth.split()
    common = sum(min(predicted.count(w), true.count(w)) for w in set(true))
    if not common:
        return 0.0
    precision, recall = common / len(predicted), common / len(true)
    return 2 * precision * recall / (precision + recall)


def evaluate_head(directory: Path, task: str, samples: int, device: str = "auto") -> dict:
    from diffllama import load

    lens = load(directory, device=device, dtype="float32")
    if task == "cls":
        reviews = corpus.generate("review", corpus.HELD_OUT_SEED, samples * 2)
        predicted = [lens.classify(r.text).labels[0].label for r in reviews]
        per_class = {label: sum(p == r.label for p, r in zip(predicted, reviews) if r.label == label)
                     / max(1, sum(r.label == label for r in reviews)) for label in corpus.SENTIMENTS}
        majority = max(sum(r.label == label for r in reviews) for label in corpus.SENTIMENTS) / len(reviews)
        return {"accuracy": sum(p == r.label for p, r in zip(predicted, reviews)) / len(reviews),
                "per_class": per_class, "majority_baseline": majority, "samples": len(reviews)}
    if task == "qa":
        examples = corpus.generate("qa", corpus.HELD_OUT_SEED, samples * 2)
        answers = [lens.answer(e.question, e.context, top_k=1).spans[0].text for e in examples]
        return {"exact_match": sum(a == e.answer_text for a, e in zip(answers, examples)) / len(examples),
                "f1": sum(token_f1(a, e.answer_text) for a, e in zip(answers, examples)) / len(examples),
                "samples": len(examples)}
    examples = corpus.generate("tagged", corpus.HELD_OUT_SEED, samples * 2)
    counts = {"all": [0, 0, 0], "non_ascii": [0, 0, 0]}  # true positives, predicted, gold
    for example in examples:
        predicted = {(e.label, e.start, e.end) for e in lens.tag(example.text).entities}
        gold = {(s.label, s.start, s.end) for s in example.entities}
        for group in ("all", "non_ascii"):
            keep = (lambda e: True) if group == "all" else (lambda e: not example.text[e[1]:e[2]].isascii())  # noqa: E731
            p, g = {e for e in predicted if keep(e)}, {e for e in gold if keep(e)}
            counts[group] = [counts[group][0] + len(p & g), counts[group][1] + len(p), counts[group][2] + len(g)]
    result = {"samples": len(examples)}
    for group, (hit, predicted_count, gold_count) in counts.items():
        precision, recall = hit / max(predicted_count, 1), hit / max(gold_count, 1)
        result[group] = {"entity_f1": 2 * precision * recall / max(precision + recall, 1e-9), "precision": precision,
                         "recall": recall, "entities": gold_count}
    return result


def head_probe(task: str, tokenizer, seed: int, samples: int = 128):
    """A quick held-out check used while training a head (probe-seed data, batched on the raw model):
    accuracy for classification, token-label accuracy for tagging, exact start-and-end match for QA."""
    head = features.HEADS[task]
    items = [head.features(tokenizer, r) for r in corpus.generate(head.kind, seed, samples)]

    @torch.no_grad()
    def probe(model) -> float:
        hits = total = 0
        for i in range(0, len(items), 32):
            batch = features.pad_batch(items[i:i + 32], tokenizer.pad_token_id, model.device)
            out = model(input_ids=batch["input_ids"])
            if task == "qa":
                hit = (out.start_logits.argmax(-1) == batch["start_positions"]) & (out.end_logits.argmax(-1) == batch["end_positions"])
                hits, total = hits + int(hit.sum()), total + len(hit)
            elif task == "cls":
                hits, total = hits + int((out.logits.argmax(-1) == batch["labels"]).sum()), total + len(batch["labels"])
            else:
                labelled = batch["labels"] != -100
                hits += int((out.logits.argmax(-1) == batch["labels"])[labelled].sum())
                total += int(labelled.sum())
        return hits / total

    return probe


# --- cards and the comparison table --------------------------------------------------------------
def fmt(value) -> str:
    return "—" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def comparison(results: dict) -> str:
    """The family README's table: every model, every task, retrieval by length."""
    archs = ["diffllama", "llama", "persimmon"]
    get = lambda arch, task, *keys: _dig(results.get(f"{arch}-{task}"), keys)  # noqa: E731
    rows = [("LM perplexity, held-out stories ↓", lambda a: get(a, "lm", "perplexity")),
            (f"greedy story continuations ({STORY_TOKENS} tokens), distinct bigrams ↑",
             lambda a: get(a, "lm", "stories", "distinct_bigrams"))]
    for length in RETRIEVAL_LENGTHS:
        rows.append((f"retrieval EM, ≈{length} tokens, 4 needles + look-alike, lead-in ↑",
                     lambda a, n=str(length): get(a, "lm", "retrieval", n, "lead_in")))
    for length in RETRIEVAL_LENGTHS:
        rows.append((f"retrieval EM, ≈{length} tokens, bare question ↑",
                     lambda a, n=str(length): get(a, "lm", "retrieval", n, "bare")))
    rows += [("classification accuracy (3 classes) ↑", lambda a: get(a, "cls", "accuracy")),
             ("QA exact match ↑", lambda a: get(a, "qa", "exact_match")),
             ("QA F1 ↑", lambda a: get(a, "qa", "f1")),
             ("tagging entity F1 ↑", lambda a: get(a, "tag", "all", "entity_f1")),
             ("tagging entity F1, non-ASCII entities ↑", lambda a: get(a, "tag", "non_ascii", "entity_f1"))]
    lines = ["| metric | " + " | ".join(archs) + " |", "|---|" + "---|" * len(archs)]
    lines += [f"| {name} | " + " | ".join(fmt(value(a)) for a in archs) + " |" for name, value in rows]
    return "\n".join(lines)


def _dig(value, keys):
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def lambda_table(training: dict) -> list[str]:
    """The card's λ section: λ per layer at each stage's start, middle and end (a DiffLlama's training
    records them at every log step), with how many layers sit outside (0, 1), where the paper's reading
    of "attention noise" holds."""
    stages = training.get("stages") or {training.get("stage", "head"): training}
    rows = [(stage, step, values) for stage, record in stages.items()
            for i, (step, values) in enumerate(record.get("lambdas", []))
            if i in (0, len(record["lambdas"]) // 2, len(record["lambdas"]) - 1)]
    if not rows:
        return []
    layers = len(rows[0][2])
    lines = ["## λ per layer through training", "", "| stage | step | " + " | ".join(f"λ{i}" for i in range(layers)) +
             " | layers outside (0, 1) |", "|---|---|" + "---|" * (layers + 1)]
    lines += [f"| {stage} | {step} | " + " | ".join(f"{v:+.3f}" for v in values) +
              f" | {sum(not 0 < v < 1 for v in values)} |" for stage, step, values in rows]
    return lines + [""]


def card(name: str, training: dict, result: dict) -> str:
    """A model card: what the checkpoint is, how it was trained, its held-out results."""
    arch, _, task = name.partition("-")
    what = {"lm": "causal language model", "cls": "3-class sentiment classifier (negative / mixed / positive)",
            "tag": "BIO entity tagger (PER, LOC, ORG, NUM, DATE)", "qa": "extractive question answering"}[task]
    return "\n".join([
        f"# {name}", "",
        f"A {training.get('parameters', 0) / 1e6:.2f} M-parameter {arch} {what}, part of DiffLlama Lens's bundled family: "
        "DiffLlama, Llama and Persimmon trained on the same generated data with the same tokenizer, recipe, seed and "
        "(within 2 %) parameter count, so differences between them come from attention. Produced by "
        "`python -m diffllama.family.train`, evaluated by `python -m diffllama.family.evaluate` on held-out data "
        f"(seed {corpus.HELD_OUT_SEED}; training used seed {corpus.TRAIN_SEED}).", "",
        "## Held-out results", "", "```json", json.dumps(result, indent=1), "```", "",
        *lambda_table(training),
        "## Training", "", "```json", json.dumps({k: v for k, v in training.items() if k != "recipe"}, indent=1)[:6000], "```", ""])


def evaluate_family(out: Path, samples: int, device: str = "auto", only: str = "*") -> dict:
    """Evaluates the checkpoints of ``out`` matching ``only`` (a glob), writes their cards and
    merges their results into ``results.json``."""
    results = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else {}
    for directory in sorted(p for p in out.glob(only) if (p / "training.json").exists()):
        started = time.time()
        task = directory.name.partition("-")[2]
        results[directory.name] = (evaluate_lm(directory, samples, device) if task == "lm"
                                  else evaluate_head(directory, task, samples, device))
        training = json.loads((directory / "training.json").read_text())
        (directory / "README.md").write_text(card(directory.name, training, results[directory.name]))
        print(f"{directory.name}: {json.dumps(results[directory.name])} ({time.time() - started:.0f}s)", flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "assets" / "models")
    parser.add_argument("--samples", type=int, default=200, help="retrieval examples per length (heads: twice as many)")
    parser.add_argument("--device", default="auto", help="models run in float32 on it (CUDA when present by default)")
    parser.add_argument("--only", default="*", help="checkpoints to evaluate, a glob such as '*-cls'")
    args = parser.parse_args(argv)
    results = evaluate_family(args.out, args.samples, args.device, args.only)
    print(comparison(results))


if __name__ == "__main__":
    main()
