"""Train the bundled demo family: one tokenizer, a causal LM per architecture with identical
hyper-parameters, then classification / tagging / QA heads fine-tuned from each LM, evaluated on
held-out data, with model cards. CPU-friendly, resumable and deterministic given the seed.

    python -m diffllama.training              # regenerates everything in assets/models/
    python -m diffllama.training --resume     # keeps finished stages
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from . import corpus

ROOT = Path(__file__).resolve().parents[1]
ARCHS = {"diffllama": "DiffLlama", "llama": "Llama", "persimmon": "Persimmon"}
TAGS = ["O"] + [f"{p}-{k}" for k in ("PER", "LOC", "ORG", "NUM", "DATE") for p in ("B", "I")]
SENTIMENT = ["negative", "positive"]


@dataclass
class ModelShape:
    vocab_size: int = 2048  # byte-level BPE trained on the corpus
    hidden_size: int = 128
    num_hidden_layers: int = 4
    num_attention_heads: int = 8  # DiffLlama: 4 differential heads
    num_key_value_heads: int = 8  # MHA everywhere (Persimmon has no GQA), even as DiffLlama requires
    intermediate_size: int = 384  # SwiGLU (3 matrices); Persimmon's 2-matrix relu² MLP gets 1.5× this
    max_position_embeddings: int = 512


@dataclass
class Recipe:
    seed: int = 0
    lm_steps: int = 1200
    lm_batch: int = 24
    lm_seq_len: int = 256
    lm_lr: float = 2e-3
    retrieval_share: float = 0.35  # share of LM documents that are retrieval / QA texts
    cls_steps: int = 600  # sentiment is easy: 600 steps reach ~100 % held-out accuracy
    tag_steps: int = 1200
    qa_steps: int = 3000  # matching the question's key to the right needle takes longest
    head_batch: int = 16
    head_lr: float = 1e-3
    threads: int = 2


# --- tokenizer ----------------------------------------------------------------------------------
def corpus_texts(seed: int, stories: int, retrievals: int) -> list[str]:
    """Language-modelling documents: stories, and retrieval contexts followed by question and answer."""
    texts = [s for s in corpus.generate("story", seed, stories)]
    texts += [f"{r.context} {r.question} {r.answer_text}." for r in corpus.generate("retrieval", seed, retrievals)]
    texts += [r.text for r in corpus.generate("review", seed, retrievals // 2)]
    texts += [t.text for t in corpus.generate("tagged", seed, retrievals // 2)]
    random.Random(seed).shuffle(texts)
    return texts


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE; a sequence starts with <s>, a question/context pair is "<s> q </s> c"."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=True),  # " Bob" spans "Bob": entity and answer spans start at the word
        processors.TemplateProcessing(single="<s> $A", pair="<s> $A </s> $B:1", special_tokens=[("<s>", 1), ("</s>", 2)]),
    ])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", model_max_length=ModelShape.max_position_embeddings)


# --- models -------------------------------------------------------------------------------------
def lm_config(arch: str, shape: ModelShape, tokenizer) -> transformers.PretrainedConfig:
    sizes = asdict(shape)
    if arch == "persimmon":  # same parameter budget with a 2-matrix MLP and no GQA
        sizes.pop("num_key_value_heads")
        sizes["intermediate_size"] = shape.intermediate_size * 3 // 2
    return transformers.AutoConfig.for_model(
        arch, **sizes, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False)


def num_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def lm_batches(tokenizer, texts: list[str], seq_len: int, batch: int, seed: int):
    """Endless batches [batch, seq_len] of documents packed end to end with </s> between them."""
    ids = []
    for text in texts:
        ids += tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
    stream = torch.tensor(ids)
    windows = len(stream) // seq_len
    stream = stream[: windows * seq_len].view(windows, seq_len)
    generator = torch.Generator().manual_seed(seed)
    while True:
        for order in torch.randperm(windows, generator=generator).split(batch):
            if len(order) == batch:
                yield {"input_ids": stream[order], "labels": stream[order]}


def train_loop(model, batches, steps: int, lr: float, log_every: int = 50, name: str = "") -> list[float]:
    """AdamW with linear warm-up and cosine decay; returns the loss of every step."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.95))
    warmup = max(steps // 20, 1)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, 0.5 * (1 + math.cos(math.pi * min(s / steps, 1.0)))))
    model.train()
    losses, start = [], time.time()
    for step in range(steps):
        loss = model(**next(batches)).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if log_every and (step % log_every == 0 or step == steps - 1):
            print(f"[{name}] step {step + 1}/{steps} loss {loss.item():.3f} ({time.time() - start:.0f}s)", flush=True)
    model.eval()
    return losses


# --- task heads ---------------------------------------------------------------------------------
def classification_examples(tokenizer, seed: int, count: int) -> list[dict]:
    return [{"input_ids": tokenizer(r.text)["input_ids"], "labels": SENTIMENT.index(r.label)}
            for r in corpus.generate("review", seed, count)]


def bio_labels(tokenizer, example: corpus.Tagged) -> dict:
    """Token labels from character spans: a token starting an entity is B-, later tokens I-."""
    encoding = tokenizer(example.text, return_offsets_mapping=True)
    labels = []
    for token_id, (start, end) in zip(encoding["input_ids"], encoding["offset_mapping"]):
        if token_id in tokenizer.all_special_ids:
            labels.append(-100)
            continue
        entity = next((e for e in example.entities if e.start <= start < e.end), None)
        labels.append(0 if entity is None else TAGS.index(("B-" if start <= entity.start else "I-") + entity.label))
    return {"input_ids": encoding["input_ids"], "labels": labels}


def tagging_examples(tokenizer, seed: int, count: int) -> list[dict]:
    return [bio_labels(tokenizer, t) for t in corpus.generate("tagged", seed, count)]


def qa_features(tokenizer, example: corpus.Retrieval) -> dict:
    encoding = tokenizer(example.question, example.context, return_offsets_mapping=True)
    sequence_ids = encoding.sequence_ids()
    tokens = [i for i, (s, (a, b)) in enumerate(zip(sequence_ids, encoding["offset_mapping"]))
              if s == 1 and a < example.answer.end and b > example.answer.start]
    return {"input_ids": encoding["input_ids"], "start_positions": tokens[0], "end_positions": tokens[-1]}


def qa_examples(tokenizer, seed: int, count: int) -> list[dict]:
    return [qa_features(tokenizer, r) for r in corpus.generate("retrieval", seed, count)]


def padded_batches(examples: list[dict], batch: int, pad_id: int, seed: int):
    """Endless shuffled batches, right-padded (labels with -100, which the losses ignore)."""
    generator = random.Random(seed)
    while True:
        order = list(range(len(examples)))
        generator.shuffle(order)
        for i in range(0, len(order) - batch + 1, batch):
            chunk = [examples[j] for j in order[i:i + batch]]
            width = max(len(e["input_ids"]) for e in chunk)
            out = {"input_ids": torch.tensor([e["input_ids"] + [pad_id] * (width - len(e["input_ids"])) for e in chunk])}
            out["attention_mask"] = (torch.arange(width)[None] < torch.tensor([len(e["input_ids"]) for e in chunk])[:, None]).long()
            for key in chunk[0]:
                if key == "input_ids":
                    continue
                if isinstance(chunk[0][key], list):
                    out[key] = torch.tensor([e[key] + [-100] * (width - len(e[key])) for e in chunk])
                else:
                    out[key] = torch.tensor([e[key] for e in chunk])
            yield out


HEADS = {  # task -> (class suffix, examples builder, id2label)
    "cls": ("ForSequenceClassification", classification_examples, SENTIMENT),
    "tag": ("ForTokenClassification", tagging_examples, TAGS),
    "qa": ("ForQuestionAnswering", qa_examples, None),
}


def fine_tune(arch: str, lm_dir: Path, task: str, recipe: Recipe, tokenizer):
    suffix, build, labels = HEADS[task]
    extra = {"id2label": dict(enumerate(labels)), "label2id": {l: i for i, l in enumerate(labels)}} if labels else {}
    torch.manual_seed(recipe.seed)
    lm = getattr(transformers, ARCHS[arch] + "ForCausalLM").from_pretrained(lm_dir)
    config = lm.config.__class__.from_dict({**lm.config.to_dict(), **extra})
    model = getattr(transformers, ARCHS[arch] + suffix)(config)  # the head starts fresh
    # copy the body explicitly: some heads name it differently (DiffLlamaForQuestionAnswering keeps it
    # under `transformer`), and from_pretrained would then silently leave it randomly initialised
    model.base_model.load_state_dict(lm.base_model.state_dict())
    steps = getattr(recipe, f"{task}_steps")
    examples = build(tokenizer, corpus.TRAIN_SEED, steps * recipe.head_batch // 2)
    losses = train_loop(model, padded_batches(examples, recipe.head_batch, tokenizer.pad_token_id, recipe.seed),
                        steps, recipe.head_lr, name=f"{arch}-{task}")
    return model, losses


# --- pipeline -----------------------------------------------------------------------------------
def save(model, tokenizer, directory: Path, record: dict) -> None:
    if directory.exists():
        shutil.rmtree(directory)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    (directory / "training.json").write_text(json.dumps(record, indent=2))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "assets" / "models")
    parser.add_argument("--resume", action="store_true", help="keep checkpoints that are already complete")
    parser.add_argument("--only", nargs="+", choices=list(ARCHS), default=list(ARCHS))
    parser.add_argument("--lm-steps", type=int, default=Recipe.lm_steps)
    parser.add_argument("--head-scale", type=float, default=1.0, help="multiply every head's steps (quick trials)")
    parser.add_argument("--skip-eval", action="store_true")
    args = parser.parse_args(argv)
    recipe = Recipe(lm_steps=args.lm_steps, **{f"{t}_steps": max(1, int(getattr(Recipe, f"{t}_steps") * args.head_scale))
                                                for t in HEADS})
    shape = ModelShape()
    torch.set_num_threads(recipe.threads)
    args.out.mkdir(parents=True, exist_ok=True)

    texts = corpus_texts(corpus.TRAIN_SEED, stories=12000, retrievals=6000)
    tokenizer_dir = args.out / "tokenizer"
    if args.resume and (tokenizer_dir / "tokenizer.json").exists():
        tokenizer = PreTrainedTokenizerFast.from_pretrained(tokenizer_dir)
    else:
        tokenizer = train_tokenizer(texts, shape.vocab_size)
        tokenizer.save_pretrained(tokenizer_dir)

    for arch in args.only:
        lm_dir = args.out / f"{arch}-lm"
        if not (args.resume and (lm_dir / "training.json").exists()):
            torch.manual_seed(recipe.seed)
            model = getattr(transformers, ARCHS[arch] + "ForCausalLM")(lm_config(arch, shape, tokenizer))
            start = time.time()
            losses = train_loop(model, lm_batches(tokenizer, texts, recipe.lm_seq_len, recipe.lm_batch, recipe.seed),
                                recipe.lm_steps, recipe.lm_lr, name=f"{arch}-lm")
            save(model, tokenizer, lm_dir, {"stage": "lm", "arch": arch, "parameters": num_parameters(model),
                                            "seconds": time.time() - start, "final_loss": sum(losses[-20:]) / 20,
                                            "recipe": asdict(recipe), "shape": asdict(shape)})
        for task in HEADS:
            if task == "qa" and arch == "persimmon":
                continue  # transformers has no PersimmonForQuestionAnswering
            head_dir = args.out / f"{arch}-{task}"
            if args.resume and (head_dir / "training.json").exists():
                continue
            start = time.time()
            model, losses = fine_tune(arch, lm_dir, task, recipe, tokenizer)
            save(model, tokenizer, head_dir, {"stage": task, "arch": arch, "parameters": num_parameters(model),
                                              "seconds": time.time() - start, "final_loss": sum(losses[-20:]) / 20,
                                              "recipe": asdict(recipe), "shape": asdict(shape)})
    if not args.skip_eval:
        from .evaluation import evaluate_family

        evaluate_family(args.out)


if __name__ == "__main__":
    main()
