"""A study's inputs: the project's generated multi-needle retrieval set, or a user's JSONL file of
``{"context", "question", "answer"}``. Every example carries its gold answer as a character span."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from .. import limits
from ..family import corpus

DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
# what a study may ask for (parameter -> (least, most)); the app's Study tab asks for less (components.study_tab)
BOUNDS = {"inputs": (1, 100_000), "needles": (1, len(corpus.CITIES)), "lookalikes": (0, 10), "fillers": (0, 2_000),
          "lengths": (1, 10), "depths": (1, 11)}


def check_bound(parameter: str, value, bounds: dict[str, tuple[int, int]] = BOUNDS) -> int:
    """``value`` as a whole number within ``bounds[parameter]``, else a message naming both."""
    low, high = bounds[parameter]
    try:
        number = int(value)
        whole = number == value if isinstance(value, float) else True
    except (TypeError, ValueError, OverflowError):
        number, whole = None, False
    if number is None or not whole or not low <= number <= high:
        raise ValueError(f"{parameter}: {value!r} is not allowed; give a whole number from {low} to {high:,}")
    return number


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
                       depths: tuple[float, ...] = DEPTHS, seed: int = 0, lookalikes: int = 1,
                       bounds: dict[str, tuple[int, int]] = BOUNDS) -> list[Example]:
    """``count`` generated retrieval inputs ("The magic number of <city> is <n>." among other cities'
    needles, ``lookalikes`` near-miss facts and ``fillers`` haystack sentences, ≈ 9 tokens each), cycling
    through every depth for each filler count in turn. Every parameter is checked against ``bounds``
    first, and the generation stops at the request's time limit (``limits.check_time``). The one place
    the study depends on the generator."""
    count, needles, lookalikes = (check_bound(name, value, bounds) for name, value in
                                  (("inputs", count), ("needles", needles), ("lookalikes", lookalikes)))
    check_bound("lengths", len(fillers), bounds)
    fillers = tuple(check_bound("fillers", value, bounds) for value in fillers)
    check_bound("depths", len(depths), bounds)
    if not all(isinstance(d, (int, float)) and 0 <= d <= 1 for d in depths):
        raise ValueError(f"depths: {list(depths)!r} is not allowed; give numbers from 0 (start) to 1 (end)")
    rng = random.Random(f"study-{seed}")
    examples = []
    for i in range(count):
        limits.check_time()
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
