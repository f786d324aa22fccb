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
    positions_limit: int | None = None  # the model's trained length, when it cut the new tokens short


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


# --- analysis ----------------------------------------------------------------------------------
VALUES = ("weight", "norm", "projection")  # what a map's cells hold: the weights, or each key's contribution
# through the head (the "contribution" measure): its norm ‖c_ik‖, or its projection on the head output's direction


@dataclass
class AttentionMap:
    """One head's map ready to draw: ``values[i, j]`` is the mass query block i gives key block j."""

    layer: int
    head: int
    kind: str  # "diff" | "a1" | "a2" | "softmax"
    values: np.ndarray  # [B, B] float32; B = N when not pooled
    edges: list[int]  # block boundaries in token positions, len B + 1
    labels: list[str]  # one per block: the token, or "first…last (i–j)" when pooled
    lambda_: float | None  # λ of this layer for DiffLlama kinds
    value: str = "weight"  # what the cells hold (VALUES): the weights, or contributions ‖c‖ / along o

    @property
    def pooled(self) -> bool:
        return len(self.edges) - 1 < self.edges[-1]


@dataclass
class ContributionMap:
    """What each key token adds to the residual stream through one head, for some query rows (the
    "contribution" measure): the weight map's counterpart, row for row."""

    layer: int
    head: int
    kind: str  # the map the weights come from: "diff" (DiffLlama) | "softmax"
    rows: list[int]  # query positions, ascending
    norms: np.ndarray  # [r, N] float32: ‖c_ik‖ ≥ 0; 0 for keys after the query
    projections: np.ndarray  # [r, N] float32: c_ik · o_i / ‖o_i‖, negative where key k pushes against the output
    output_norms: np.ndarray  # [r] float32: ‖o_i‖ = Σ_k projections[i, k]


@dataclass
class AttentionRegion:
    """A rectangle of one head's map at full resolution: ``values[i, j]`` is the attention query token
    ``rows[0] + i`` gives key token ``cols[0] + j`` (0 where the key is in the query's future)."""

    layer: int
    head: int
    kind: str
    values: np.ndarray  # [rows, cols] float32
    rows: tuple[int, int]  # query token positions [start, end)
    cols: tuple[int, int]  # key token positions [start, end)
    row_labels: list[str]
    col_labels: list[str]
    lambda_: float | None
    value: str = "weight"  # as AttentionMap.value


@dataclass
class Overview:
    """Small multiples of every layer × head, each pooled to at most ``size`` × ``size``."""

    kind: str
    maps: list[list[np.ndarray]]  # [layer][head] -> [b, b]
    edges: list[int]
    seq_len: int
    query_rows: list[int] | None = None  # the query positions averaged over when sampled; None: every row
    value: str = "weight"  # as AttentionMap.value
    stats: HeadStats | None = None  # every head's statistics of its weights over the same rows, once every layer is done

    @property
    def pooled(self) -> bool:
        return len(self.edges) - 1 < self.seq_len


@dataclass
class HeadStats:
    """Per layer × head summaries of one kind of map (rows are the query positions, averaged).

    A row is read as the distribution p = |row| / Σ|row| (the row itself for softmax maps)."""

    kind: str
    top_k: int
    entropy: np.ndarray  # [L, H] nats, mean over query rows 1..N-1
    top_k_mass: np.ndarray  # [L, H] mass of the k largest keys (sparsity)
    sink_mass: np.ndarray  # [L, H] mass on the first token
    negative_mass: np.ndarray  # [L, H] share of |row| that is negative (0 for softmax maps)


READINGS = ("net", "absolute", "adds", "subtracts", "signed", "normalised", "contribution", "projection")
# the first is the default (analysis.measures: "net reading", and the README says why); absolute = adds + subtracts


@dataclass
class LayerLambda:
    """A DiffLlama layer's λ as every allocation and sink table shows it beside its numbers."""

    layer: int
    lambda_: float
    row_sum: float  # 1 − λ: what a row of D sums to
    regime: str  # analysis.measures.REGIMES
    note: str  # the regime in words (analysis.measures.REGIME_NOTES)


@dataclass
class Table:
    """Rows ready to show: the UI displays them as they are."""

    headers: list[str]
    rows: list[list]
    notes: list[str] = field(default_factory=list)  # what a reader must know to read the rows (regimes, gaps)
    definitions: str = ""  # the measures' definitions (Markdown, from analysis.measures)
    measured: list[str] = field(default_factory=list)  # what each row group was measured from and on (a caption)


@dataclass
class ReferenceSpan:
    """The characters allocation is measured on, chosen independently of the models' predictions
    (a gold answer or a span the user marks), or a model's prediction when explicitly picked."""

    start: int  # character offsets into the text whose sequence id is ``sequence``
    end: int
    sequence: int  # 0 = text, 1 = text_pair (a QA context)
    source: str  # "gold answer" | "marked span" | "A's prediction" | "B's prediction"


@dataclass
class SpanAllocation:
    """The Differential Transformer paper's key-information-retrieval measurement: attention from the
    query token to the answer span vs to the rest of the context, per layer × head, in every reading
    of ``analysis.measures`` (``READINGS``). A cell a reading does not define (the normalised reading
    where 1 − λ < 0.1; contributions of A1 or A2 alone) is NaN, and ``gaps`` says why."""

    kind: str
    query: int  # the query token's position
    query_token: str
    query_rule: str  # how it was chosen ("last prompt token", "token before the answer in the continuation", "chosen")
    answer: tuple[int, int]  # token span [start, end)
    context: tuple[int, int]  # token span [start, end) containing the answer
    context_rule: str  # what the context is ("the context's characters", "the whole text the span is in", …)
    answer_mass: dict[str, np.ndarray]  # reading -> [L, H]
    noise_mass: dict[str, np.ndarray]  # reading -> [L, H]
    lambdas: list[LayerLambda] | None  # DiffLlama: per layer λ, 1 − λ and regime; None for softmax models
    gaps: dict[str, str] = field(default_factory=dict)  # reading -> why some or all of its cells are not reported
    reference: str = "marked span"  # where the answer span came from (ReferenceSpan.source)

    def means(self, reading: str = READINGS[0]) -> tuple[float, float]:
        """(attention to answer, attention noise), mean over layers and heads; NaN when a layer is not reported."""
        return float(self.answer_mass[reading].mean()), float(self.noise_mass[reading].mean())

    def layer_means(self, reading: str = READINGS[0]) -> tuple[np.ndarray, np.ndarray]:
        """(attention to answer, attention noise) per layer [L], mean over heads."""
        return self.answer_mass[reading].mean(axis=1), self.noise_mass[reading].mean(axis=1)

    @property
    def caveat(self) -> str | None:
        """The readings with cells not reported, and why, in one line (None when every cell is)."""
        return "; ".join(f"{reading} reading {why}" for reading, why in self.gaps.items()) or None


@dataclass
class SinkScores:
    """Attention sinks on the first token, per map kind (A1, A2, D for DiffLlama; softmax otherwise)."""

    threshold: float  # ε: a head is a sink head when its score exceeds it
    window: int  # T: query rows 1..T−1 of the first T tokens were read (analysis.measures: sink score)
    scores: dict[str, np.ndarray]  # kind -> [L, H] the first token's mean share of each row's magnitude
    lambdas: list[LayerLambda] | None = None  # DiffLlama: per layer λ beside the scores

    def share_above(self, kind: str) -> float:
        """Share of the kind's layer × head maps whose sink score exceeds ``threshold``."""
        return float((self.scores[kind] > self.threshold).mean())


@dataclass
class AblationResult:
    """How a DiffLlama's outputs change when λ is replaced (0 = subtraction off, only A1 drives V)."""

    value: float  # λ' used in every layer
    tokens: list[str]  # what each compared distribution belongs to, for display: the token, "start"/"end" (QA), "label"
    kl: list[float]  # KL(original ‖ ablated) ≥ 0 of the output distribution at each position
    original: list[str]  # top prediction per position, for display: label, next token, or (QA) the token at the position
    ablated: list[str]
    changed: list[bool]  # the top prediction differs
    original_prob: list[float]  # P(original top prediction) before the ablation
    original_prob_after: list[float]  # P(original top prediction) after it
    ablated_prob: list[float]  # P(new top prediction) after it
    answers: tuple | None = None  # QA: best span (context chars start, end, score) before and after; None when no span


@dataclass
class OutlierStats:
    """Magnitudes as the paper's Table 5 reports them: top-1/2/3/10/100 and median of |values|."""

    attention_logits: dict[str, float]  # keys "top-1", "top-2", "top-3", "top-10", "top-100", "median"
    hidden_states: dict[str, float]


@dataclass
class TokenAlignment:
    """Token correspondences between two tokenisations of the same text, by character overlap."""

    a_to_b: list[list[int]]  # for each token of A, the tokens of B overlapping it
    b_to_a: list[list[int]]
