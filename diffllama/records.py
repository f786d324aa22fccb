"""Typed records that cross from the backend to the UI: plain values and numpy arrays, no torch."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ModelInfo:
    """What a model slot shows about a loaded checkpoint."""

    source: str
    arch: str
    task: str
    num_parameters: int
    num_layers: int
    num_heads: int  # differential heads for DiffLlama
    has_lambda: bool
    device: str
    dtype: str
    labels: list[str] = field(default_factory=list)  # id2label in id order, for classification / tagging


@dataclass
class GenerationResult:
    """A finished generation: the prompt, what was generated, and a trace over both."""

    prompt: str
    text: str  # generated continuation only (special tokens removed)
    token_ids: list[int]  # prompt + generation
    prompt_length: int  # number of prompt tokens in token_ids
    finished_by_eos: bool
    trace: object = field(repr=False)  # diffllama.Trace of prompt + generation


@dataclass
class LabelScore:
    label: str
    probability: float


@dataclass
class ClassificationResult:
    labels: list[LabelScore]  # sorted, most probable first
    pooled_index: int  # the token whose hidden state the head read (last non-padding token)
    pooled_token: str
    trace: object = field(repr=False)


@dataclass
class AnswerSpan:
    text: str
    start: int  # character offsets into the context
    end: int
    score: float  # P(start) · P(end) within the window that produced it
    token_start: int  # token positions in that window's trace
    token_end: int  # inclusive
    window: int


@dataclass
class QAResult:
    spans: list[AnswerSpan]  # best first
    context_positions: list[int]  # token positions of the context in the best window's trace
    start_logits: list[float]  # over context_positions
    end_logits: list[float]
    num_windows: int
    trace: object = field(repr=False)  # the window holding the best span


@dataclass
class Entity:
    label: str  # entity type without the B-/I- prefix
    start: int  # character offsets into the text
    end: int
    text: str
    score: float  # mean of its words' scores


@dataclass
class TokenTag:
    token: str
    start: int
    end: int
    label: str  # raw BIO label of the token
    score: float


@dataclass
class TaggingResult:
    entities: list[Entity]
    tokens: list[TokenTag]  # every non-special token with its own prediction
    trace: object = field(repr=False)
