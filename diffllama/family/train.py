"""Train the bundled model family: DiffLlama, Llama and Persimmon with the same data, tokenizer,
recipe, seed, step budget and (within 2 %) parameter count, so differences between them come from
attention. Every stage is a checkpoint directory whose training.json marks it finished:

    data → tokenizer → <arch>: induction → lm → long → lm checkpoint → cls, tag, qa heads

- induction: random token spans repeated (loss on the repeat): copying heads form first;
- lm: stories, reviews, tagged sentences and retrieval documents (≤ 512 tokens) whose difficulty grows
  from one needle to four needles among look-alikes (the curriculum), answers weighted up;
- long: the same mixture in 2048-token rows, retrieval contexts up to ≈ 2K tokens, so a 2K input is
  inside the trained range;
- heads: sequence classification (3-class sentiment), token classification (BIO entities) and
  extractive QA (no Persimmon QA head exists in transformers) on the final LM body.

Held-out retrieval accuracy (greedy generation, a probe set never used for the test) is tracked
during the LM stages and the best checkpoint of each stage is kept.

    python -m diffllama.family.train                          # everything into assets/models/
    python -m diffllama.family.train --resume                 # skip finished stages
    python -m diffllama.family.train --resume --until lm      # stop after the lm stage (one GPU loan a run)
    python -m diffllama.family.train --only llama --steps lm=50 long=10 cls=10 tag=10 qa=10 --out /tmp/trial
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
import transformers
from transformers import PreTrainedTokenizerFast

from ..trace import architecture_of
from . import corpus, evaluate, features

ROOT = Path(__file__).resolve().parents[2]
ARCHS = {"diffllama": "DiffLlama", "llama": "Llama", "persimmon": "Persimmon"}  # arch -> transformers class prefix


@dataclass
class ModelShape:
    """One shape for the whole family; Persimmon's MLP width is derived to match the parameter count."""

    vocab_size: int = 2048  # byte-level BPE trained on the training corpus
    hidden_size: int = 192
    num_hidden_layers: int = 4
    num_attention_heads: int = 8  # DiffLlama pairs heads i and i+4: 4 differential heads of width 48
    num_key_value_heads: int = 8  # even, as DiffLlama requires; no GQA, since Persimmon has none
    intermediate_size: int = 512  # SwiGLU width (3 matrices) for Llama and DiffLlama
    max_position_embeddings: int = features.MAX_POSITIONS
    tie_word_embeddings: bool = True  # input and output embeddings would be a third of the model otherwise


@dataclass(frozen=True)
class Stage:
    """One language-model stage: rows of ``seq_len`` tokens, ``batch`` rows a step."""

    steps: int
    seq_len: int
    batch: int
    lr: float


@dataclass
class Recipe:
    """Optimisation and data, identical for every architecture."""

    seed: int = 0
    induction: Stage = Stage(steps=400, seq_len=256, batch=32, lr=2e-3)
    lm: Stage = Stage(steps=6000, seq_len=512, batch=32, lr=2e-3)
    long: Stage = Stage(steps=1500, seq_len=2048, batch=8, lr=6e-4)
    cls_steps: int = 400  # 600 steps saturate at 100 % held-out, 200 underfit (0.65–0.79)
    tag_steps: int = 600
    qa_steps: int = 2000
    head_batch: int = 32
    head_lr: float = 1e-3
    warmup: float = 0.03  # share of steps with linear warm-up before the cosine decay
    weight_decay: float = 0.01  # on weight matrices only: not on norms, biases or DiffLlama's λ vectors
    # DiffLlama's λ = exp(λq1·λk1) − exp(λq2·λk2) + λ_init moves exponentially fast in its vectors: at the
    # body's lr (2e-3) the first family left (0, 1) in three of four layers; the λ vectors learn at this
    # share of each stage's lr (set 1.0 to reproduce the first family)
    lambda_lr_scale: float = 0.05
    answer_weight: float = 5.0  # loss weight on answer tokens: random 4-digit numbers are rare among all tokens
    probe_every: int = 500


SHARES = {  # document mixture of the LM stages
    "lm": (("story", 0.35), ("retrieval", 0.4), ("fact_qa", 0.1), ("review", 0.08), ("tagged", 0.07)),
    "long": (("story", 0.3), ("retrieval", 0.6), ("fact_qa", 0.04), ("review", 0.03), ("tagged", 0.03)),
}


# --- models -------------------------------------------------------------------------------------
def num_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def build_config(arch: str, shape: ModelShape, tokenizer, intermediate_size: int | None = None):
    sizes = asdict(shape)
    if arch == "persimmon":
        sizes.pop("num_key_value_heads")  # Persimmon has no GQA: always one KV head per query head
    if intermediate_size is not None:
        sizes["intermediate_size"] = intermediate_size
    return transformers.AutoConfig.for_model(arch, **sizes, attention_dropout=0.0, pad_token_id=tokenizer.pad_token_id,
                                             bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)


def count_parameters(config) -> int:
    with torch.device("meta"):  # sizes only, no memory or initialisation
        return num_parameters(transformers.AutoModelForCausalLM.from_config(config))


def lm_config(arch: str, shape: ModelShape, tokenizer):
    """The causal-LM config of ``arch``. Persimmon's relu² MLP has 2 matrices (plus biases), not
    SwiGLU's 3, so its width is solved for the Llama parameter count (the count is linear in it)."""
    if arch != "persimmon":
        return build_config(arch, shape, tokenizer)
    target = count_parameters(build_config("llama", shape, tokenizer))
    low, high = shape.intermediate_size, 2 * shape.intermediate_size
    at_low, at_high = (count_parameters(build_config(arch, shape, tokenizer, w)) for w in (low, high))
    width = round(low + (target - at_low) * (high - low) / (at_high - at_low))
    return build_config(arch, shape, tokenizer, width)


# --- language-model data ------------------------------------------------------------------------
def retrieval_level(rng: random.Random, stage: str, progress: float) -> dict:
    """Retrieval difficulty at ``progress`` (0..1) of a stage: the lm stage grows from one needle and a
    couple of fillers to four needles, ≈ 45 fillers and look-alikes over its first 60 %; the long
    stage spreads contexts over ≈ 150–2000 tokens."""
    if stage == "long":
        return {"needles": rng.randint(2, 6), "fillers": rng.randint(10, 215), "lookalikes": rng.randint(0, 2)}
    level = min(1.0, progress / 0.6)
    most = 1 + round(level * 3)
    return {"needles": rng.randint(max(1, most - 2), most), "fillers": rng.randint(0, 2 + round(level * 43)),
            "lookalikes": rng.randint(0, round(level * 2))}


def lm_documents(rng: random.Random, count: int, stage: str, progress: float) -> list[tuple[str, corpus.Span | None]]:
    """``count`` documents of ``stage``'s mixture with their answer spans (None for plain text)."""
    kinds, weights = zip(*SHARES[stage])
    documents = []
    for kind in rng.choices(kinds, weights, k=count):
        record = (corpus.retrieval(rng, **retrieval_level(rng, stage, progress)) if kind == "retrieval"
                  else corpus.GENERATORS[kind](rng))
        documents.append(corpus.lm_text(record) if isinstance(record, corpus.QAExample) else (record.text, None))
    return documents


def encode_documents(tokenizer, documents, answer_weight: float) -> list[tuple[list[int], list[float]]]:
    """Token ids ("<s> text </s>") and per-token loss weights: ``answer_weight`` on the answer's
    tokens, 1 elsewhere. A weight belongs to the token being predicted."""
    encodings = tokenizer([text for text, _ in documents], return_offsets_mapping=True)
    encoded = []
    for (_, answer), ids, offsets in zip(documents, encodings["input_ids"], encodings["offset_mapping"]):
        weights = [answer_weight if answer and a < answer.end and b > answer.start else 1.0 for a, b in offsets]
        encoded.append((ids + [tokenizer.eos_token_id], weights + [1.0]))
    return encoded


def pack_rows(encoded, seq_len: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole documents packed greedily into rows of ``seq_len``, right-padded with weight 0, so a
    retrieval document is never cut off from its question. Returns ids and weights [rows, seq_len]."""
    rows, row_ids, row_weights = [], [], []
    for ids, weights in encoded:
        ids, weights = ids[:seq_len], weights[:seq_len]
        if len(row_ids) + len(ids) > seq_len:
            rows.append((row_ids, row_weights))
            row_ids, row_weights = [], []
        row_ids, row_weights = row_ids + ids, row_weights + weights
    rows.append((row_ids, row_weights))
    pad = [seq_len - len(ids) for ids, _ in rows]
    ids = torch.tensor([r + [pad_id] * p for (r, _), p in zip(rows, pad)])  # [rows, seq_len]
    weights = torch.tensor([w + [0.0] * p for (_, w), p in zip(rows, pad)])  # [rows, seq_len]
    return ids, weights


ROWS_PER_CHUNK = 256  # one data worker's unit; each chunk has its own seed and curriculum level


def _chunk_rows(job: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """One chunk of a stage's rows: documents from the chunk's own seed at its curriculum level,
    drawn until they fill ``ROWS_PER_CHUNK`` rows (with room for packing gaps)."""
    tokenizer_dir, stage, seq_len, answer_weight, seed, index, progress = job
    tokenizer = PreTrainedTokenizerFast.from_pretrained(tokenizer_dir)
    rng = random.Random(f"{stage}-{seed}-{index}")
    encoded, tokens = [], 0
    while tokens < 1.4 * ROWS_PER_CHUNK * seq_len:
        batch = encode_documents(tokenizer, lm_documents(rng, 128, stage, progress), answer_weight)
        encoded += batch
        tokens += sum(len(ids) for ids, _ in batch)
    ids, weights = pack_rows(encoded, seq_len, tokenizer.pad_token_id)
    return ids[:ROWS_PER_CHUNK], weights[:ROWS_PER_CHUNK]


def lm_rows(tokenizer_dir: Path, stage: str, spec: Stage, recipe: Recipe, workers: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exactly ``steps × batch`` rows in training order, made in chunks whose retrieval difficulty
    follows the chunk's place in the stage (the curriculum). Chunks have their own seeds, so the
    rows do not depend on the number of worker processes."""
    rows = spec.steps * spec.batch
    chunks = math.ceil(rows / ROWS_PER_CHUNK)
    jobs = [(str(tokenizer_dir), stage, spec.seq_len, recipe.answer_weight, recipe.seed, i, i / chunks) for i in range(chunks)]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        parts = pool.map(_chunk_rows, jobs)
    return torch.cat([p[0] for p in parts])[:rows], torch.cat([p[1] for p in parts])[:rows]


def induction_rows(vocab_size: int, spec: Stage, seed: int, first_id: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of random token spans (16–64 tokens) each repeated once; the loss is on the repeats only,
    which only a copying (induction) mechanism can predict."""
    generator = torch.Generator().manual_seed(seed)
    rows = spec.steps * spec.batch
    ids = torch.zeros(rows, spec.seq_len, dtype=torch.long)
    weights = torch.zeros(rows, spec.seq_len)
    for r in range(rows):
        cursor = 0
        while True:
            span = int(torch.randint(16, 65, (1,), generator=generator))
            if cursor + 2 * span > spec.seq_len:
                break
            tokens = torch.randint(first_id, vocab_size, (span,), generator=generator)  # no special tokens
            ids[r, cursor:cursor + span] = ids[r, cursor + span:cursor + 2 * span] = tokens
            weights[r, cursor + span:cursor + 2 * span] = 1.0
            cursor += 2 * span
    return ids, weights


def weighted_lm_loss(model, batch: dict) -> torch.Tensor:
    """Next-token cross-entropy weighted per predicted token (answers up, padding 0)."""
    logits = model(input_ids=batch["input_ids"]).logits  # [B, T, V]
    losses = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), batch["input_ids"][:, 1:].flatten(), reduction="none")
    weights = batch["weights"][:, 1:].flatten()
    return (losses * weights).sum() / weights.sum()


def row_batches(ids: torch.Tensor, weights: torch.Tensor, batch: int, device) -> Iterator[dict]:
    """Rows in order (the curriculum is in the order), ``batch`` at a time."""
    for i in range(0, len(ids) - batch + 1, batch):
        yield {"input_ids": ids[i:i + batch].to(device), "weights": weights[i:i + batch].to(device)}


# --- heads --------------------------------------------------------------------------------------
def head_batches(tokenizer, head: features.Head, seed: int, steps: int, batch: int, device) -> Iterator[dict]:
    """``steps`` batches of fresh examples (none repeated)."""
    records = corpus.generate(head.kind, seed, steps * batch)
    for i in range(0, len(records), batch):
        yield features.pad_batch([head.features(tokenizer, r) for r in records[i:i + batch]], tokenizer.pad_token_id, device)


def head_model(arch: str, task: str, lm):
    """A fresh task head on top of the LM's body. The body is copied explicitly: DiffLlama's QA
    class keeps it under ``transformer`` instead of ``model``, and from_pretrained would then
    silently leave it randomly initialised."""
    head = features.HEADS[task]
    config = lm.config.to_dict()
    if head.labels:
        config.update(id2label=dict(enumerate(head.labels)), label2id={l: i for i, l in enumerate(head.labels)})
    model = getattr(transformers, ARCHS[arch] + head.suffix)(lm.config.__class__.from_dict(config))
    model.base_model.load_state_dict(lm.base_model.state_dict())
    return model.to(device=lm.device, dtype=torch.float32)  # the saved LM config says float16 (its storage)


# --- training loop ------------------------------------------------------------------------------
LAMBDA_VECTORS = ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2")


def parameter_groups(model, lr: float, recipe: Recipe) -> list[dict]:
    """AdamW's groups: weight matrices with weight decay; norms, biases and embeddings' 1-D parameters
    without; DiffLlama's λ vectors without decay and at ``recipe.lambda_lr_scale`` of the lr."""
    groups = {"decay": [], "no_decay": [], "lambda": []}
    for name, parameter in model.named_parameters():
        kind = ("lambda" if name.rsplit(".", 1)[-1] in LAMBDA_VECTORS else
                "decay" if parameter.ndim >= 2 else "no_decay")
        groups[kind].append(parameter)
    return [dict(params=groups["decay"], lr=lr, weight_decay=recipe.weight_decay),
            dict(params=groups["no_decay"], lr=lr, weight_decay=0.0),
            dict(params=groups["lambda"], lr=lr * recipe.lambda_lr_scale, weight_decay=0.0)]


def layer_lambdas(model) -> list[float] | None:
    """DiffLlama's λ per layer as its attention forms them (None for other architectures)."""
    lambdas = architecture_of(model.config).lambdas(model)
    return None if lambdas is None else [round(value, 4) for value in lambdas[0]]


def train_loop(model, batches: Iterator[dict], steps: int, lr: float, loss_fn: Callable, recipe: Recipe,
               name: str, log_every: int = 100, probe: Callable | None = None, probe_every: int = 0) -> dict:
    """AdamW (``parameter_groups``), linear warm-up then cosine decay to 10 %; ``probe(model) -> float``
    (held-out accuracy) runs every ``probe_every`` steps and at the end, and the best-probed weights are
    restored at the end. Returns the losses, probes and, for a DiffLlama, λ per layer at every log step."""
    optimizer = torch.optim.AdamW(parameter_groups(model, lr, recipe), betas=(0.9, 0.95))
    warm = max(1, round(steps * recipe.warmup))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warm, 0.1 + 0.45 * (1 + math.cos(math.pi * min(s / steps, 1.0)))))
    losses, probes, best, start = [], [], None, time.time()
    lambdas = [(0, layer_lambdas(model))] if layer_lambdas(model) else []
    model.train()
    for step in range(steps):
        loss = loss_fn(model, next(batches))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        last = step == steps - 1
        if probe is not None and (last or probe_every and (step + 1) % probe_every == 0):
            model.eval()
            score = probe(model)
            model.train()
            probes.append((step + 1, score))
            if best is None or score >= best[0]:
                best = (score, step + 1, {k: v.detach().clone() for k, v in model.state_dict().items()})
        if (step + 1) % log_every == 0 or step == 0 or last:
            if lambdas:
                lambdas.append((step + 1, layer_lambdas(model)))
            recent = losses[-log_every:]
            probe_text = f" probe {probes[-1][1]:.3f}" if probes and probes[-1][0] == step + 1 else ""
            print(f"[{name}] step {step + 1}/{steps} loss {sum(recent) / len(recent):.4f}{probe_text} "
                  f"({time.time() - start:.0f}s, {(time.time() - start) / (step + 1) * 1000:.0f} ms/step)", flush=True)
    model.eval()
    record = {"steps": steps, "seconds": round(time.time() - start, 1), "first_loss": losses[0],
              "final_loss": sum(losses[-20:]) / len(losses[-20:]), "probes": probes}
    if lambdas:
        record["lambdas"] = lambdas  # [(step, λ per layer)]: the trajectory, before any best-probe restore
    if best is not None:
        model.load_state_dict(best[2])
        record["kept_step"], record["kept_probe"] = best[1], best[0]
        if lambdas:
            record["kept_lambdas"] = layer_lambdas(model)
    return record


# --- stages -------------------------------------------------------------------------------------
def save_stage(model, tokenizer, directory: Path, record: dict) -> None:
    """Checkpoint (float16 on disk: loading returns float32 on CPU), tokenizer and training record;
    training.json is written last, so its presence marks a finished stage for --resume."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "training.json").unlink(missing_ok=True)
    model.to(torch.float16).save_pretrained(directory)
    model.to(torch.float32)
    tokenizer.save_pretrained(directory)
    (directory / "training.json").write_text(json.dumps(record, indent=2))


def finished(directory: Path, resume: bool) -> bool:
    """Whether ``directory`` holds a finished stage to keep (only with --resume)."""
    return resume and (directory / "training.json").exists()


def load_rows(work: Path, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
    saved = torch.load(work / f"rows-{stage}.pt")
    return saved["ids"], saved["weights"]


LM_STAGES = ("induction", "lm", "long")


def train_language_model(arch: str, tokenizer, shape: ModelShape, recipe: Recipe, work: Path, device,
                         resume: bool, until: str = "long") -> tuple:
    """The LM stages of one architecture up to ``until``, each resumable from ``work``."""
    torch.manual_seed(recipe.seed)  # the same initial draw for every run of one architecture
    model = getattr(transformers, ARCHS[arch] + "ForCausalLM")(lm_config(arch, shape, tokenizer)).to(device)
    print(f"[{arch}] {num_parameters(model):,} parameters", flush=True)
    probe_set = corpus.generate("retrieval", corpus.PROBE_SEED, 96, needles=4, fillers=30, lookalikes=1)
    probe = lambda m: evaluate.retrieval_accuracy(m, tokenizer, probe_set)  # noqa: E731
    records = {}
    for stage in LM_STAGES[:LM_STAGES.index(until) + 1]:
        directory = work / f"{arch}-{stage}"
        if finished(directory, resume):
            model = type(model).from_pretrained(directory, dtype=torch.float32).to(device)
            records[stage] = json.loads((directory / "training.json").read_text())
            continue
        spec = getattr(recipe, stage)
        ids, weights = load_rows(work, stage)
        records[stage] = train_loop(model, row_batches(ids, weights, spec.batch, device), spec.steps, spec.lr,
                                    weighted_lm_loss, recipe, f"{arch}-{stage}",
                                    probe=None if stage == "induction" else probe, probe_every=recipe.probe_every)
        save_stage(model, tokenizer, directory, records[stage])
    return model, records


def fine_tune(arch: str, task: str, lm, tokenizer, recipe: Recipe) -> tuple:
    """The one fine-tuning loop for every head: fresh head, LM body, transformers' loss; the
    held-out probe (accuracy / entity F1 / exact match on probe-seed data) keeps the best weights."""
    torch.manual_seed(recipe.seed)  # the head's initialisation
    model = head_model(arch, task, lm)
    steps = getattr(recipe, f"{task}_steps")
    batches = head_batches(tokenizer, features.HEADS[task], corpus.TRAIN_SEED, steps, recipe.head_batch, lm.device)
    probe = evaluate.head_probe(task, tokenizer, corpus.PROBE_SEED)
    record = train_loop(model, batches, steps, recipe.head_lr, lambda m, b: m(**b).loss, recipe,
                        f"{arch}-{task}", probe=probe, probe_every=max(steps // 6, 1))
    return model, record


def tasks_for(arch: str) -> list[str]:
    return [t for t in features.HEADS if not (t == "qa" and arch == "persimmon")]  # transformers has no Persimmon QA head


def train_architecture(arch: str, out: Path, work: Path, recipe: Recipe, shape: ModelShape, device,
                       resume: bool, until: str = "heads") -> None:
    """The stages of one architecture up to ``until``: the LM stages, then every head on the LM. A run
    that stops early leaves its finished stages in ``work`` for the next run's ``--resume``."""
    tokenizer = PreTrainedTokenizerFast.from_pretrained(out / "tokenizer")
    lm_dir = out / f"{arch}-lm"
    if finished(lm_dir, resume):
        lm = transformers.AutoModelForCausalLM.from_pretrained(lm_dir, dtype=torch.float32).to(device)
    else:
        lm, records = train_language_model(arch, tokenizer, shape, recipe, work, device, resume,
                                           until if until in LM_STAGES else "long")
        if until in LM_STAGES[:-1]:
            return
        save_stage(lm, tokenizer, lm_dir, {"stage": "lm", "arch": arch, "parameters": num_parameters(lm),
                                           "recipe": asdict(recipe), "shape": asdict(shape), "stages": records})
    if until in LM_STAGES:
        return
    for task in tasks_for(arch):
        head_dir = out / f"{arch}-{task}"
        if not finished(head_dir, resume):
            model, record = fine_tune(arch, task, lm, tokenizer, recipe)
            save_stage(model, tokenizer, head_dir, {"stage": task, "arch": arch, "parameters": num_parameters(model),
                                                    "recipe": asdict(recipe), **record})


def prepare_data(out: Path, work: Path, recipe: Recipe, shape: ModelShape, workers: int, resume: bool) -> None:
    """The tokenizer and every LM stage's rows, shared by all architectures (the same data, in the same order)."""
    tokenizer_dir = out / "tokenizer"
    if not (resume and (tokenizer_dir / "tokenizer.json").exists()):
        features.train_tokenizer(features.tokenizer_texts(corpus.TRAIN_SEED, 20000), shape.vocab_size).save_pretrained(tokenizer_dir)
    work.mkdir(parents=True, exist_ok=True)
    for stage in LM_STAGES:
        path = work / f"rows-{stage}.pt"
        if resume and path.exists():
            continue
        started = time.time()
        spec = getattr(recipe, stage)
        ids, weights = (induction_rows(shape.vocab_size, spec, recipe.seed) if stage == "induction"
                        else lm_rows(tokenizer_dir, stage, spec, recipe, workers))
        torch.save({"ids": ids, "weights": weights}, path)
        print(f"{stage} data: {tuple(ids.shape)} rows, {int((weights > 0).sum()):,} weighted tokens "
              f"({time.time() - started:.0f}s)", flush=True)


def parse_steps(pairs: list[str], recipe: Recipe) -> Recipe:
    """["lm=50", "qa=20"] -> the recipe with those step counts."""
    for pair in pairs:
        stage, _, value = pair.partition("=")
        if not value.isdigit() or stage not in ("induction", "lm", "long", *features.HEADS):
            raise SystemExit(f"--steps takes STAGE=N with STAGE one of induction, lm, long, {', '.join(features.HEADS)}; got {pair!r}")
        if stage in features.HEADS:
            recipe = replace(recipe, **{f"{stage}_steps": int(value)})
        else:
            recipe = replace(recipe, **{stage: replace(getattr(recipe, stage), steps=int(value))})
    return recipe


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "assets" / "models")
    parser.add_argument("--work", type=Path, default=None, help="intermediate stages and data (default: OUT/../.family-work)")
    parser.add_argument("--seed", type=int, default=Recipe.seed)
    parser.add_argument("--steps", nargs="*", default=[], metavar="STAGE=N", help="e.g. lm=1000 long=200 qa=700")
    parser.add_argument("--only", choices=list(ARCHS), action="append", help="train only this architecture (repeatable)")
    parser.add_argument("--stage", choices=["data", "train", "all"], default="all",
                        help="data: tokenizer and rows only; train: architectures only (data must exist)")
    parser.add_argument("--resume", action="store_true", help="skip stages whose checkpoint is complete")
    parser.add_argument("--until", choices=[*LM_STAGES, "heads"], default="heads",
                        help="stop after this stage (a GPU lent for ≈ 10 minutes at a time: one stage per run, --resume the next)")
    parser.add_argument("--workers", type=int, default=2, help="processes making the data")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on CPU")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    recipe, shape = parse_steps(args.steps, Recipe(seed=args.seed)), ModelShape()
    work = args.work or args.out.parent / ".family-work"
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = True  # a CUDA run: TF32 matmuls (no effect on CPU)
    begin = time.time()
    if args.stage in ("data", "all"):
        prepare_data(args.out, work, recipe, shape, args.workers, args.resume)
    if args.stage in ("train", "all"):
        for arch in args.only or list(ARCHS):
            train_architecture(arch, args.out, work, recipe, shape, device, args.resume, args.until)
    print(f"finished in {(time.time() - begin) / 60:.1f} min on {device}", flush=True)


if __name__ == "__main__":
    main()
