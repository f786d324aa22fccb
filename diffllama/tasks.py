"""The four task runners (bound as methods of ``LensModel``): each returns a typed record holding
the Trace of the very forward pass that produced its numbers."""

from __future__ import annotations

import contextvars
import queue
import threading
import unicodedata
from typing import Iterator

import torch
from transformers import LogitsProcessor, LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper
from transformers.generation.streamers import BaseStreamer

from . import budget, limits
from .cores import one_core
from .records import AnswerSpan, ClassificationResult, Entity, GenerationResult, LabelScore, QAResult, TaggingResult, TokenTag
from .trace import IncrementalDecoder, decoded_offsets, trace_encoding, trace_ids


def _require(model, task: str) -> None:
    if model.task != task:
        raise ValueError(f"this is a {model.task} model ({model.source}); load a {task} checkpoint for this")


# --- what a model reads -----------------------------------------------------------------------
WINDOWED_TASKS = ("qa",)  # tasks whose runner reads a long input in windows, within the token limit


def check_input(self, what: str, text: str, text_pair: str | None = None, new_tokens: int = 0) -> int:
    """Refuse, before any trace, an input this model cannot read in one pass (``limits.check_tokens``):
    its tokens as the model reads them, special ones included, against its trained positions
    (``new_tokens`` of them kept free) and the token limit. Returns the token count."""
    tokens = len(self.tokenizer(text, text_pair)["input_ids"])
    limits.check_tokens(tokens, what, len(text) + len(text_pair or ""),
                        positions=(self.source, self.config.max_position_embeddings, new_tokens))
    return tokens


def check_task_input(self, what: str, texts: list[str]) -> None:
    """The check a run of this model's task gets before it is queued (``components.admission``), the rule
    its runner applies again before any trace: QA's question and context within the token limit (read
    in windows), a generation prompt keeping a position for a new token, any other input within the
    trained positions."""
    if self.task in WINDOWED_TASKS:
        tokens = sum(len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) for text in texts)
        limits.check_tokens(tokens, what, sum(map(len, texts)), f" for {self.source}")
    else:
        check_input(self, what, *texts, new_tokens=1 if self.task == "generation" else 0)


# --- generation ------------------------------------------------------------------------------
class SeededSampler(LogitsProcessor):
    """Samples the next token with a per-request ``torch.Generator`` and leaves only it allowed, so
    greedy decoding picks it: seeded sampling without touching torch's global RNG, which concurrent
    requests share."""

    def __init__(self, generator: torch.Generator):
        self.generator = generator

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs = torch.softmax(scores.float(), dim=-1)  # [batch, vocab]
        choice = torch.multinomial(probs, num_samples=1, generator=self.generator)  # [batch, 1]
        return torch.full_like(scores, float("-inf")).scatter_(1, choice, 0.0)


PIECE_SECONDS = 0.05  # the stream hands over text at most about this often (a page redraws no faster)
ONE_CORE_PARAMETERS = 50_000_000  # a model this small generates on one core (``one_core``)


class _TokenQueue(BaseStreamer):
    """What ``generate`` hands its streamer, passed on as plain token ids: the generating thread
    does nothing else per step, and the consumer decodes (``GenerationStream``)."""

    def __init__(self):
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.ended = threading.Event()
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:  # generate passes the prompt first
            self._prompt_seen = True
            return
        self.queue.put(value.reshape(-1).tolist())  # [batch] ids of this step, batch 1

    def end(self) -> None:
        self.queue.put(None)
        self.ended.set()


class GenerationStream:
    """Iterate for text pieces as they are generated; afterwards ``result`` holds the
    ``GenerationResult`` (full token sequence and a Trace over prompt + generation).

    transformers' ``generate`` runs in a worker thread and hands each new token id over a queue;
    this iterator takes the first token that arrives, then everything that arrives within
    ``PIECE_SECONDS`` (or until generation ends), decodes those incrementally (``IncrementalDecoder``)
    and yields their text. So the consumer wakes once per piece, not once per token (each wake-up,
    decode and yield holds the interpreter the generating thread needs).

    A model under ``ONE_CORE_PARAMETERS`` generates on one core: its per-step operations are too
    small to share, and an OpenMP team of two pays a barrier per operation, whose waiting thread
    spins whenever the other core is busy (the bundled 2M-parameter DiffLlama: 25 CPU-ms a token in
    a team of two on a loaded 2-core machine, 7 on one core, and 8× faster)."""

    def __init__(self, lens_model, prompt: str, generate_kwargs: dict, positions_limit: int | None = None):
        self._lens_model, self._prompt, self._kwargs = lens_model, prompt, generate_kwargs
        self.positions_limit = positions_limit  # the model's trained length, when it cut max_new_tokens
        self.result: GenerationResult | None = None

    def __iter__(self) -> Iterator[str]:
        lens, tokenizer = self._lens_model, self._lens_model.tokenizer
        prompt_ids = tokenizer(self._prompt, return_tensors="pt")["input_ids"].to(lens.device)
        streamer, outcome = _TokenQueue(), {}

        def run():
            if lens.model.num_parameters() < ONE_CORE_PARAMETERS:
                one_core()
            try:
                with torch.no_grad():
                    outcome["ids"] = lens.model.generate(prompt_ids, streamer=streamer, **self._kwargs)
            except Exception as error:  # surfaced in the consumer's thread below
                outcome["error"] = error
                streamer.end()

        # with a copy of this context, so the request's time limit holds in the generating thread too
        worker = threading.Thread(target=contextvars.copy_context().run, args=(run,), daemon=True)
        worker.start()
        decoder, finished = IncrementalDecoder(tokenizer), False
        while not finished:
            arrived = [streamer.queue.get()]
            streamer.ended.wait(PIECE_SECONDS)  # let the next tokens gather without waking for each
            while not streamer.queue.empty():
                arrived.append(streamer.queue.get())
            emitted = len(decoder.text)
            for ids in arrived:
                if ids is None:
                    finished = True
                    break
                for token_id in ids:
                    decoder.add(token_id)
            piece = decoder.text[emitted:] + (decoder.tail if finished else "")
            if piece:
                yield piece
        worker.join()
        if "error" in outcome:
            raise outcome["error"]
        ids = outcome["ids"][0].tolist()
        prompt_length = prompt_ids.shape[1]
        self.result = GenerationResult(
            prompt=self._prompt,
            text=tokenizer.decode(ids[prompt_length:], skip_special_tokens=True),
            token_ids=ids,
            prompt_length=prompt_length,
            finished_by_eos=ids[-1] in _eos_ids(lens.model),
            positions_limit=self.positions_limit,
            trace=_continued(lens, ids),
        )


def _eos_ids(model) -> set[int]:
    eos = model.generation_config.eos_token_id
    return set(eos if isinstance(eos, list) else [eos] if eos is not None else [])


def generate(self, prompt: str, max_new_tokens: int = 64, temperature: float = 1.0, top_p: float = 1.0,
             greedy: bool = False, seed: int | None = None) -> GenerationStream:
    """Stream a continuation of ``prompt`` (KV cache, SDPA); stops on EOS or ``max_new_tokens``."""
    _require(self, "generation")
    limits.check_text(prompt, "prompt")
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be at least 1")
    processors = LogitsProcessorList()
    if not greedy:
        if temperature <= 0 or not 0 < top_p <= 1:
            raise ValueError("temperature must be > 0 and top_p in (0, 1]; or use greedy decoding")
        generator = torch.Generator(device=self.device)
        generator.manual_seed(seed) if seed is not None else generator.seed()
        processors.extend([TemperatureLogitsWarper(temperature), TopPLogitsWarper(top_p), SeededSampler(generator)])
    prompt_tokens = check_input(self, "prompt", prompt, new_tokens=1)
    positions = self.config.max_position_embeddings
    limited = prompt_tokens + max_new_tokens > positions
    max_new_tokens = min(max_new_tokens, positions - prompt_tokens)
    budget.check(budget.generation_bytes(self.model, prompt_tokens, max_new_tokens),
                 f"generating {max_new_tokens} tokens after a {prompt_tokens}-token prompt", "ask for fewer new tokens or shorten the prompt")
    pad = self.config.pad_token_id if self.config.pad_token_id is not None else self.tokenizer.eos_token_id
    kwargs = dict(max_new_tokens=max_new_tokens, do_sample=False, logits_processor=processors,
                  pad_token_id=pad, eos_token_id=list(_eos_ids(self.model)) or None)
    return GenerationStream(self, prompt, kwargs, positions if limited else None)


def _continued(self, ids: list[int]):
    """The trace of a prompt and its continuation as token ids, one sequence: offsets into their decoded text."""
    special = set(self.tokenizer.all_special_ids)
    _, offsets = decoded_offsets(self.tokenizer, ids)
    return trace_ids(self.model, self.tokenizer, self.arch, ids, offsets, [None if i in special else 0 for i in ids])


def trace_continuation(self, prompt: str, continuation: str, what: str = "prompt + continuation"):
    """A continuation of ``prompt`` (one generated before, or typed) traced as generation traces its own:
    the prompt's tokens as ``generate`` reads them, then the continuation's, in one pass (so the prompt's
    tokens are the same whatever follows). Returns the trace and the prompt's token count, which
    ``analysis.default_query`` reads to find the token before the answer in the continuation."""
    _require(self, "generation")
    prompt_ids = self.tokenizer(prompt)["input_ids"]
    ids = prompt_ids + self.tokenizer(continuation, add_special_tokens=False)["input_ids"]
    limits.check_tokens(len(ids), what, len(prompt) + len(continuation),
                        positions=(self.source, self.config.max_position_embeddings, 0))
    return _continued(self, ids), len(prompt_ids)


# --- classification --------------------------------------------------------------------------
def pooled_position(input_ids: list[int], pad_token_id: int | None) -> int:
    """The token a sequence-classification head reads: the last non-padding token, as in
    transformers' ``GenericForSequenceClassification``."""
    if pad_token_id is None:
        return len(input_ids) - 1
    non_pad = [i for i, token in enumerate(input_ids) if token != pad_token_id]
    return non_pad[-1] if non_pad else len(input_ids) - 1


def classify(self, text: str) -> ClassificationResult:
    """Label probabilities for ``text`` from ``config.id2label``, most probable first."""
    _require(self, "classification")
    limits.check_text(text)
    trace = self.trace(text)
    probs = torch.softmax(trace.logits, dim=-1).tolist()  # [labels]
    labels = sorted((LabelScore(self.config.id2label[i], p) for i, p in enumerate(probs)), key=lambda s: -s.probability)
    pooled = pooled_position(trace.input_ids, self.config.pad_token_id)
    return ClassificationResult(labels=labels, pooled_index=pooled, pooled_token=trace.tokens[pooled], trace=trace)


# --- extractive question answering ------------------------------------------------------------
MAX_ANSWER_TOKENS = 30  # longest span considered, as the QA pipeline's max_answer_len
def best_spans(start_logits: torch.Tensor, end_logits: torch.Tensor, allowed: torch.Tensor,
               top_k: int, max_answer_tokens: int) -> list[tuple[int, int, float]]:
    """Top ``(start, end, score)`` spans of one window, as transformers' QA pipeline decodes them:
    tokens outside ``allowed`` (question, special tokens) are masked, start and end logits are
    softmaxed separately, a span scores P(start)·P(end), with start ≤ end < start + max_answer_tokens."""
    start = torch.softmax(start_logits.float().masked_fill(~allowed, -10000.0), dim=-1)  # [N]
    end = torch.softmax(end_logits.float().masked_fill(~allowed, -10000.0), dim=-1)
    scores = torch.triu(torch.tril(start[:, None] * end[None, :], diagonal=max_answer_tokens - 1))  # [N, N]
    scores = scores * (allowed[:, None] & allowed[None, :])
    flat = scores.flatten()
    order = torch.argsort(flat, descending=True)[:top_k]
    n = scores.shape[1]
    return [(int(i) // n, int(i) % n, float(flat[i])) for i in order if flat[i] > 0]


def answer_tokens(trace) -> torch.Tensor:
    """Which tokens an answer may use: the context's (text pair's) tokens that cover characters. [N] bool"""
    return torch.tensor([s == 1 and b > a for s, (a, b) in zip(trace.sequence_ids, trace.offsets)])


def answer(self, question: str, context: str, top_k: int = 5, max_answer_tokens: int = MAX_ANSWER_TOKENS,
           max_length: int | None = None, stride: int | None = None, window: int | None = None) -> QAResult:
    """The best answer spans inside ``context`` for ``question``; a context longer than the model's
    maximum is read in overlapping windows (``stride`` tokens shared), like the QA pipeline. The
    result's trace and logits are those of ``window`` (0-based), or of the window holding the best span."""
    _require(self, "qa")
    limits.check_text(question, "question")
    limits.check_text(context, "context")
    positions = min(self.config.max_position_embeddings, self.tokenizer.model_max_length)
    if max_length is not None and max_length > positions:
        # a longer window would be cut to the model's positions without its overlap: refuse, say why
        raise ValueError(f"max_length {max_length} is more than this model's {positions} positions; "
                         f"use at most {positions}, or leave it unset to read long contexts in windows of {positions}")
    max_length = max_length or positions
    question_tokens = len(self.tokenizer(question)["input_ids"])
    if question_tokens > max_length // 2:
        raise ValueError(f"the question is {question_tokens} tokens long; keep it under {max_length // 2} so the context fits")
    stride = stride if stride is not None else min(128, (max_length - question_tokens) // 4)
    encoding = self.tokenizer(question, context, truncation="only_second", max_length=max_length, stride=stride,
                              return_overflowing_tokens=True, return_offsets_mapping=True)
    windows = len(encoding["input_ids"])
    limits.check_tokens(windows * max_length, "context", len(context), f" read in {windows} windows of {max_length}")
    if window is not None and not 0 <= window < windows:
        raise ValueError(f"window {window} does not exist: this context is read in windows 0..{windows - 1}")
    candidates, best = {}, None  # one window's trace is kept: the one asked for, else the best answer's so far
    for index in range(windows):
        trace = trace_encoding(self.model, self.tokenizer, self.arch, encoding, index)
        for s, e, score in best_spans(trace.logits[:, 0], trace.logits[:, 1], answer_tokens(trace), top_k, max_answer_tokens):
            chars = (trace.offsets[s][0], trace.offsets[e][1])
            # the same characters found in two overlapping windows count once, with the best score
            if chars not in candidates or candidates[chars].score < score:
                candidates[chars] = AnswerSpan(context[chars[0]:chars[1]], *chars, score, s, e, index)
        # the top span (first of the sort below) stays in its window or moves to this one, never to a dropped one
        top = min(candidates.values(), key=lambda span: -span.score, default=None)
        if index == (window if window is not None else top.window if top else 0):
            best = trace
    spans = sorted(candidates.values(), key=lambda span: -span.score)[:top_k]
    positions = [i for i, s in enumerate(best.sequence_ids) if s == 1]
    return QAResult(spans=spans, context_positions=positions, start_logits=best.logits[positions, 0].tolist(),
                    end_logits=best.logits[positions, 1].tolist(), num_windows=windows, trace=best)


# --- token tagging ---------------------------------------------------------------------------
def _word_character(character: str) -> bool:
    """Letters, marks, digits and symbols (emoji among them) make words; punctuation and spaces split them."""
    return unicodedata.category(character)[0] in "LMNS"


def aggregate_entities(text: str, tags: list[TokenTag]) -> list[Entity]:
    """Subword pieces into words (a word takes its first piece's label and score, the pipeline's
    "first" strategy), then BIO words into entities (an entity's score is its words' mean)."""
    words: list[TokenTag] = []
    for tag in tags:
        if tag.end <= tag.start:  # a bare-space token covers no characters
            continue
        # a piece continues a word when it shares the word's characters (byte-level pieces of one
        # character such as "ü" carry the same span), or touches it between word characters
        # ("Par"+"is"); punctuation starts a word of its own, so "Paris." tags "Paris"
        continues_word = words and (tag.start < words[-1].end or (
            tag.start == words[-1].end and _word_character(text[tag.start]) and _word_character(text[tag.start - 1])))
        if continues_word:
            word, end = words[-1], max(words[-1].end, tag.end)
            words[-1] = TokenTag(text[word.start:end], word.start, end, word.label, word.score)
        else:
            words.append(tag)
    entities: list[Entity] = []
    scores: list[list[float]] = []
    open_entity = None  # the entity the previous word belonged to; an I- word may extend only that one
    for word in words:
        prefix, _, kind = word.label.partition("-")
        if not kind:  # "O" (or a label without a B-/I- prefix)
            open_entity = None
        elif prefix == "I" and open_entity is not None and open_entity.label == kind:
            open_entity.end, open_entity.text = word.end, text[open_entity.start:word.end]
            scores[-1].append(word.score)
        else:
            open_entity = Entity(kind, word.start, word.end, text[word.start:word.end], 0.0)
            entities.append(open_entity)
            scores.append([word.score])
    for entity, entity_scores in zip(entities, scores):
        entity.score = sum(entity_scores) / len(entity_scores)
    return entities


def tag(self, text: str) -> TaggingResult:
    """Entities in ``text`` with labels, character spans and scores, plus every token's own label."""
    _require(self, "tagging")
    limits.check_text(text)
    trace = self.trace(text)
    probs = torch.softmax(trace.logits, dim=-1)  # [N, labels]
    scores, labels = probs.max(dim=-1)
    tags = [TokenTag(text[start:end], start, end, self.config.id2label[int(label)], float(score))
            for (start, end), label, score, seq in zip(trace.offsets, labels, scores, trace.sequence_ids) if seq is not None]
    return TaggingResult(entities=aggregate_entities(text, tags), tokens=tags, trace=trace)
