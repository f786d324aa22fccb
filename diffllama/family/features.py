"""What the family's models read: the tokenizer and each task's inputs and labels, shared by
training and evaluation (so both encode a record the same way)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from . import corpus

ENTITY_TYPES = ["PER", "LOC", "ORG", "NUM", "DATE"]
TAGS = ["O"] + [f"{prefix}-{kind}" for kind in ENTITY_TYPES for prefix in ("B", "I")]
MAX_POSITIONS = 2048  # the family's trained length


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE. A single text encodes as "<s> text", a pair as "<s> question </s> context"
    (context sequence id 1, which extractive QA masks on); offsets are trimmed to the word, so
    " Lyon" spans "Lyon" and entity and answer spans start at their first letter."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()  # decode() gives readable text, spaces included
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=True),
        processors.TemplateProcessing(single="<s> $A", pair="<s> $A </s> $B:1", special_tokens=[("<s>", 1), ("</s>", 2)]),
    ])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", model_max_length=MAX_POSITIONS)


def tokenizer_texts(seed: int, count: int) -> list[str]:
    """Texts of every kind for training the tokenizer (retrieval as the LM reads it)."""
    texts = []
    for kind in ("story", "retrieval", "fact_qa", "review", "tagged"):
        records = corpus.generate(kind, seed, count // 5)
        texts += [corpus.lm_text(r)[0] if isinstance(r, corpus.QAExample) else r.text for r in records]
    return texts


def classification(tokenizer, review: corpus.Review) -> dict:
    return {"input_ids": tokenizer(review.text)["input_ids"], "labels": corpus.SENTIMENTS.index(review.label)}


def tagging(tokenizer, example: corpus.Tagged) -> dict:
    """BIO labels from character spans and the tokenizer's offsets: a token is B- if it starts the
    entity's first character, I- if it lies further inside, O outside; special tokens get -100
    (ignored). Byte-level pieces of one character share its span: the first piece takes B-, the
    second I- (the app's word aggregation reads the first piece of a word)."""
    encoding = tokenizer(example.text, return_offsets_mapping=True)
    labels, previous_start = [], None
    for token_id, (start, end) in zip(encoding["input_ids"], encoding["offset_mapping"]):
        entity = next((e for e in example.entities if e.start <= start < e.end), None)
        if token_id in tokenizer.all_special_ids:
            labels.append(-100)
            start = None  # "<s>" covers (0, 0): it must not make the first word a continuation
        elif entity is None:
            labels.append(0)
        else:
            begins = start == entity.start and previous_start != start
            labels.append(TAGS.index(("B-" if begins else "I-") + entity.label))
        previous_start = start
    return {"input_ids": encoding["input_ids"], "labels": labels}


def question_answering(tokenizer, example: corpus.QAExample) -> dict:
    """"<s> question </s> context" with the answer's first and last context tokens."""
    encoding = tokenizer(example.question, example.context, return_offsets_mapping=True)
    answer = [i for i, (sequence, (a, b)) in enumerate(zip(encoding.sequence_ids(), encoding["offset_mapping"]))
              if sequence == 1 and a < example.answer.end and b > example.answer.start]
    return {"input_ids": encoding["input_ids"], "start_positions": answer[0], "end_positions": answer[-1]}


@dataclass
class Head:
    """A fine-tuning task: transformers head class suffix, data kind, features and labels."""

    suffix: str
    kind: str  # corpus generator
    features: Callable
    labels: list[str] | None  # id2label; None for QA's start/end logits


HEADS = {
    "cls": Head("ForSequenceClassification", "review", classification, corpus.SENTIMENTS),
    "tag": Head("ForTokenClassification", "tagged", tagging, TAGS),
    "qa": Head("ForQuestionAnswering", "qa", question_answering, None),
}


def pad_batch(items: list[dict], pad_id: int, device) -> dict:
    """Right-pads features into tensors. No attention mask is needed: the models are causal, so real
    tokens never see the padding after them; the classifier pools the last non-pad token
    (config.pad_token_id) and padded token labels are -100, which the losses ignore."""
    width = max(len(f["input_ids"]) for f in items)
    batch = {}
    for key in items[0]:
        if key == "input_ids" or key == "labels" and isinstance(items[0][key], list):
            fill = pad_id if key == "input_ids" else -100
            batch[key] = torch.tensor([f[key] + [fill] * (width - len(f[key])) for f in items])  # [B, width]
        else:
            batch[key] = torch.tensor([f[key] for f in items])  # [B]
    return {k: v.to(device) for k, v in batch.items()}
