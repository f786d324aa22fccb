"""A study's inputs: the project's generated multi-needle retrieval set, or a user's JSONL file of
``{"context", "question", "answer"}``. Every example carries its gold answer as a character span."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from ..family import corpus

DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass
class Example:
    context: str
    question: str
    answer_start: int  # character span of the gold answer in the context
    answer_end: int
    depth: float  # where the answer sits in the context: 0 = start, 1 = end
    lead_in: str = ""  # words after the question that the answer continues ("The magic number of Lyon is")

    @property
    def answer(self) -> str:
        return self.context[self.answer_start:self.answer_end]


def retrieval_examples(count: int, needles: int = 4, fillers: tuple[int, ...] = (28,),
                       depths: tuple[float, ...] = DEPTHS, seed: int = 0, lookalikes: int = 1) -> list[Example]:
    """``count`` generated retrieval inputs ("The magic number of <city> is <n>." among other cities'
    needles, ``lookalikes`` near-miss facts and ``fillers`` haystack sentences, ≈ 9 tokens each), cycling through every depth for each filler count in turn. The one
    place the study depends on the generator."""
    rng = random.Random(f"study-{seed}")
    examples = []
    for i in range(count):
        depth, length = depths[i % len(depths)], fillers[i // len(depths) % len(fillers)]
        generated = corpus.retrieval(rng, needles=needles, fillers=length, depth=depth, lookalikes=lookalikes)
        examples.append(Example(generated.context, generated.question, generated.answer.start, generated.answer.end,
                                generated.depth, corpus.lead_in(generated)))
    return examples


def read_jsonl(path: str | Path) -> list[Example]:
    """Examples from a JSONL file, one ``{"context", "question", "answer"}`` object a line (optionally
    ``"lead_in"``); the answer is found in the context (first occurrence) and its depth is where it starts."""
    examples = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            context, question, answer = (str(record[key]) for key in ("context", "question", "answer"))
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(f"{path}, line {number}: expected a JSON object with context, question and answer ({error})") from None
        start = context.find(answer) if answer else -1
        if start < 0:
            raise ValueError(f"{path}, line {number}: the answer {answer!r} does not occur in the context")
        room = len(context) - len(answer)
        examples.append(Example(context, question, start, start + len(answer), start / room if room else 0.0,
                                str(record.get("lead_in", ""))))
    if not examples:
        raise ValueError(f"{path} holds no examples")
    return examples
