"""The one written definition of every measure the app reports. The README's "Measures" section,
the UI's notes and the study's tables quote these texts (a test keeps the README in step), and the
readings' λ regimes are decided here (``regime``, ``normalised_defined``), so no caller decides again.

Notation: ``M`` is one head's map, row ``i`` a query, column ``k`` a key; for DiffLlama
``D = A1 − λ·A2`` (rows sum to 1 − λ), for softmax maps rows sum to 1. ``q`` is the query token
(below), ``S`` the reference span's tokens, ``C`` the context's tokens."""

from __future__ import annotations

from dataclasses import dataclass

NORMALISED_FLOOR = 0.1  # the normalised reading divides by 1 − λ only where 1 − λ ≥ this
NEAR_ONE = NORMALISED_FLOOR  # |1 − λ| below this: "λ ≈ 1"
SINK_WINDOW = 64  # Gu et al.'s fixed window of first tokens
SINK_THRESHOLD = 0.3  # ε of Gu et al.
FEW_INPUTS = 10  # bootstrap intervals over fewer inputs are flagged


@dataclass(frozen=True)
class Measure:
    name: str
    formula: str
    meaning: str

    @property
    def text(self) -> str:
        return f"**{self.name}**: `{self.formula}`. {self.meaning}"


MEASURES = {measure.name: measure for measure in (
    Measure("query token", "q: the token whose next-token prediction is the answer's first token",
            "Where every allocation is measured. A language model's prompt: its last token. A generated continuation: the "
            "token before the answer's first token in the continuation (the last prompt token when the continuation starts "
            "with it, or when the answer never appears in it, where the answer should have come). An extractive QA head "
            "predicts no next token: it scores every context token as start and end from that token's causal row, so the "
            "one row that has read the question and the whole context, the last input token's, is its query. Any position "
            "can be chosen instead; every table names the query it used."),
    Measure("context", "C: the tokens covering the context's characters",
            "The passage the answer is looked for in, and nothing else: not ⟨s⟩, the question, the lead-in or the query "
            "token. The study's context is its generated passage; a QA input's is its context (text_pair); elsewhere the "
            "characters you give as context (by default the whole text the span is in, and the table says so)."),
    Measure("attention to answer", "Σ_{k∈S} M[q, k]",
            "What the query token gives the reference span: the gold answer when the input has one, else a span you mark "
            "(never a model's own prediction unless you pick it, and then it is labelled so); mean over layers and heads, "
            "in one of the readings below."),
    Measure("attention noise", "Σ_{k∈C∖S} M[q, k]",
            "What the query token gives the rest of the context, in the same reading."),
    Measure("net reading", "Σ_{k∈X} D[q, k] ÷ Σ_k |D[q, k]|",
            "The app's default: the span's signed share of the row's magnitude, in [−1, 1] for every λ. It never divides "
            "by 1 − λ (so it cannot blow up near λ = 1 or flip sign past it), and weight the layer subtracts counts "
            "against the span, never as attention to it. Equals adds − subtracts; for a softmax map, the plain attention."),
    Measure("absolute reading", "Σ_{k∈X} |D[q, k]| ÷ Σ_k |D[q, k]|",
            "The span's share of the row's magnitude, in [0, 1], reported as its two parts (adds + subtracts): on its own "
            "it counts weight the layer subtracts as attention."),
    Measure("adds reading", "Σ_{k∈X} max(D[q, k], 0) ÷ Σ_k |D[q, k]|",
            "The part of the absolute reading that adds the keys' values (positive entries of D)."),
    Measure("subtracts reading", "Σ_{k∈X} max(−D[q, k], 0) ÷ Σ_k |D[q, k]|",
            "The part of the absolute reading that subtracts them (negative entries of D; 0 for softmax maps)."),
    Measure("signed reading", "Σ_{k∈X} D[q, k]",
            "The mass as the model applies it to V; a differential row sums to 1 − λ (> 1 where λ < 0, ≈ 0 where λ ≈ 1, "
            "negative where λ > 1) and negative entries cancel positive ones."),
    Measure("normalised reading", f"signed ÷ (1 − λ), only where 1 − λ ≥ {NORMALISED_FLOOR}",
            "The Differential Transformer paper's reading, comparable with a softmax row's sum of 1 while 0 < λ < 1. Not "
            f"reported for a layer whose 1 − λ is below {NORMALISED_FLOOR}: near 0 (λ ≈ 1) the division blows up, and "
            "below 0 (λ > 1) it flips every sign, so a span the layer subtracts would read as attended."),
    Measure("contribution reading", "Σ_{k∈X} ‖c_qk‖ ÷ Σ_k ‖c_qk‖",
            "The span's share of what the head writes (the contribution measure below): defined for every λ, since it "
            "measures the head's output after the sub-layer RMSNorm, not the weights. Only for the map a head applies "
            "(D or a softmax map), not A1 or A2 alone."),
    Measure("projection reading", "Σ_{k∈X} c_qk·o_q/‖o_q‖ ÷ ‖o_q‖",
            "The span's signed share of the head's output along the output's direction (the row sums to 1): negative "
            "where the span pushes against what the head writes."),
    Measure("λ regime", "rows of D sum to 1 − λ",
            "λ is one learned scalar per layer with nothing keeping it in (0, 1). λ < 0: the layer adds A2 (D = A1 + "
            "|λ|·A2, rows sum to more than 1). 0 < λ < 1: it subtracts a fraction of A2 (rows sum to 1 − λ in (0, 1)). "
            f"λ ≈ 1 (|1 − λ| < {NEAR_ONE}): rows sum to ≈ 0 and only the sub-layer RMSNorm sets the output's scale. "
            "λ > 1: it subtracts more than it keeps (rows sum to a negative number). Every DiffLlama table shows λ and "
            "1 − λ per layer beside its numbers."),
    Measure("entropy", "−Σ_k p_k·log p_k, p = |M[i]| ÷ Σ_k |M[i, k]|",
            "How spread a row is (nats), mean over query rows 1..N−1 (row 0 can only attend to itself)."),
    Measure("top-k mass", "sum of the k largest p_k",
            "How concentrated a row is (sparsity), mean over query rows 1..N−1."),
    Measure("first-token mass", "p_0 = |M[i, 0]| ÷ Σ_k |M[i, k]|, mean over rows 1..N−1",
            "The sink score over the whole input (the same number; see sink score)."),
    Measure("negative mass", "Σ_k max(−M[i, k], 0) ÷ Σ_k |M[i, k]|",
            "The share of a row that subtracts (0 for softmax maps), mean over query rows 1..N−1."),
    Measure("sink score", "α = (1/(T−1))·Σ_{i=1}^{T−1} |M[i, 0]| ÷ Σ_k |M[i, k]|",
            f"The first token's mean share of each row's magnitude over the first T tokens: T = {SINK_WINDOW} by default "
            "(Gu et al., ICLR 2025, so inputs of any length compare; the whole input when shorter, and the table says T), "
            "or T = N, the whole input, where it equals the first-token mass. One definition for every map: for a softmax "
            "map it is Gu et al.'s α (without row 0, whose only key is the first token); for D it reads |D| shares, in "
            "[0, 1] for every λ, because D's rows sum to 1 − λ, not 1 (α_D ÷ (1 − λ) would blow up near λ = 1)."),
    Measure("sink share", f"share of layer × head maps with α > ε, ε = {SINK_THRESHOLD}",
            "How many heads are attention sinks, with Gu et al.'s threshold (on the sink score above, so it applies to D too)."),
    Measure("contribution", "c_ik = w_ik·W_h v_k; shown ‖c_ik‖ and c_ik·o_i/‖o_i‖",
            "What key k actually adds to query i's output through head h, not only its weight (Kobayashi et al., "
            "2020): v_k is k's value vector (both halves, width 2·head_dim, for DiffLlama), W_h the head's slice of "
            "the output projection, and w_ik = (1 − λ_init)·s_i·D[i, k] for a differential head, s_i = 1/rms(Σ_k "
            "D[i, k]·v_k) the sub-layer RMSNorm's scale, or A[i, k] for a softmax head. Σ_k c_ik = o_i is exactly "
            "the head's output (the output projection's bias, which Persimmon has, belongs to no key). The norm "
            "says how much k adds; the signed projection on o_i's direction says whether it pushes along the "
            "output or against it, and a row of projections sums to ‖o_i‖."),
    Measure("attention-logit outliers", "|q·k|·scale",
            "The scaled pre-softmax logits of every layer, softmax head (both maps of a differential head) and "
            "causal (query, key) pair: top-1/2/3/10/100 and median, exact (paper's Table 5)."),
    Measure("hidden-state outliers", "|h_l[i, c]|",
            "Every value of every decoder layer's output (the last layer's before the final norm), every token "
            "and channel: top-1/2/3/10/100 and median, exact (paper's Table 5)."),
    Measure("retrieval accuracy", "share of inputs whose greedy continuation's first number equals the answer",
            "Whether a language model actually found the answer, next to its attention numbers: \"48213\" is not "
            "\"4821\". A non-numeric answer must start the continuation and end at a word boundary."),
    Measure("QA exact match", "share of inputs whose best span equals the answer",
            "The same for an extractive question-answering model."),
    Measure("Wilson interval", "(p̂ + z²/2n ± z·√(p̂(1−p̂)/n + z²/4n²)) ÷ (1 + z²/n), z = 1.96",
            "The 95 % interval of an accuracy (a share of n yes/no outcomes): unlike a bootstrap it is not [1, 1] when "
            "every input succeeded."),
    Measure("95 % CI", "2.5th and 97.5th percentiles of the mean over 2000 bootstrap resamples of the inputs",
            f"How much a study's mean would move with other inputs of the same kind; n is the number of inputs in that "
            f"cell, as counted. Below {FEW_INPUTS} inputs a percentile bootstrap is too narrow: such cells are flagged †."),
    Measure("paired difference", "mean over inputs of (A − B) on the same input, 95 % CI from resampling inputs",
            "Model A minus model B measured on the same inputs, so the inputs' own spread cancels: \"A gives more to the "
            "answer than B\" holds where the interval lies above 0. For accuracies, Newcombe's interval for paired "
            "proportions (built from both Wilson intervals and the outcomes' correlation) instead of the bootstrap."),
    Measure("answer probability and rank", "p(a) = softmax(z)[a] at q; rank = 1 + #{t: z_t > z_a}",
            "Every intervention's readout names the answer token a first: the next token after the input that you "
            "give (else the model's own top prediction before the intervention), before → after."),
    Measure("answer logit change", "z_a(ablated) − z_a at q",
            "What ablating one head (alone) does to the answer's logit: zero-ablation sets the head's output, as the "
            "output projection reads it, to 0; mean-ablation to its mean over the input's positions. A DiffLlama head "
            "is a differential head: both of its maps (its normed A1·V − λ·A2·V)."),
    Measure("recovered share", "(m_patched − m_corrupted) ÷ (m_clean − m_corrupted), m = z_a − z_foil at q",
            "Activation patching: the corrupted input run with one activation from the clean run (a head's output at "
            "every position, or the residual entering a layer at one position); 1 = the clean answer fully back, 0 = "
            "no effect, undefined when the two inputs give the same m. Without a foil m = z_a."),
    Measure("logit lens", "softmax(W_out·norm(h_l[q]))",
            "What the residual stream after layer l (0 = the embeddings) predicts, through the model's own final norm "
            "and output head; the last layer's is exactly the model's output. The answer emerges at the first layer "
            "from which it stays the top prediction."),
    Measure("output KL", "Σ_t p(t)·(log p(t) − log p'(t))",
            "How much an intervention (or quantization) changes the output distribution at a position, in nats."),
    Measure("top-1 agreement", "share of positions where argmax p = argmax p'",
            "How often a quantized model predicts the same top token as the full one."),
    Measure("map change", "mean over heads and causal (i, k) of |M[i, k] − M'[i, k]|",
            "How much a layer's maps (the model's own: D for DiffLlama) move under quantization; also its maximum."),
)}

REGIMES = ("λ < 0", "0 < λ < 1", "λ ≈ 1", "λ > 1")
REGIME_NOTES = {
    "λ < 0": "adds A2 (D = A1 + |λ|·A2): no entry is negative, rows sum to 1 − λ > 1",
    "0 < λ < 1": "subtracts a fraction of A2: rows sum to 1 − λ in (0, 1)",
    "λ ≈ 1": "rows sum to ≈ 0: only the sub-layer RMSNorm sets the output's scale; normalised reading not reported",
    "λ > 1": "subtracts more than it keeps: rows sum to a negative number; normalised reading not reported (÷ (1 − λ) "
             "would flip every sign)",
}


def regime(lambda_: float) -> str:
    """The λ regime (``REGIMES``) a layer's λ is in."""
    if abs(1 - lambda_) < NEAR_ONE:
        return "λ ≈ 1"
    if lambda_ < 0:
        return "λ < 0"
    return "0 < λ < 1" if lambda_ < 1 else "λ > 1"


def normalised_defined(lambda_: float) -> bool:
    """Whether the normalised reading is reported for a layer with this λ."""
    return 1 - lambda_ >= NORMALISED_FLOOR


def markdown(*names: str) -> str:
    """The definitions of ``names`` (all when none) as a Markdown list."""
    return "\n".join(f"- {MEASURES[name].text}" for name in names or MEASURES)
