"""The one written definition of every measure the app reports. The README's "Measures" section,
the UI's notes and the study's tables quote these texts (a test keeps the README in step).

Notation: ``M`` is one head's map, row ``i`` a query, column ``k`` a key; for DiffLlama
``D = A1 − λ·A2`` (rows sum to 1 − λ), for softmax maps rows sum to 1. ``q`` is the last token,
``S`` the reference span's tokens, ``C`` the context's tokens."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Measure:
    name: str
    formula: str
    meaning: str

    @property
    def text(self) -> str:
        return f"**{self.name}**: `{self.formula}`. {self.meaning}"


MEASURES = {measure.name: measure for measure in (
    Measure("attention to answer", "Σ_{k∈S} M[q, k]",
            "What the last token gives the reference span: the gold answer when the input has one, else a span "
            "you mark (never a model's own prediction unless you pick it, and then it is labelled so); "
            "mean over layers and heads, in one of the three readings below."),
    Measure("attention noise", "Σ_{k∈C∖S} M[q, k]",
            "What the last token gives the rest of the context, in the same reading."),
    Measure("signed reading", "Σ_{k∈X} D[q, k]",
            "The mass as the model applies it to V; a differential row sums to 1 − λ and negative entries "
            "cancel positive ones, so a span's signed mass can be 0 while its entries are not."),
    Measure("normalised reading", "signed ÷ (1 − λ)",
            "The Differential Transformer paper's reading, comparable with a softmax row's sum of 1; it leaves "
            "[0, 1] when D has negative entries, and the app says so when it does."),
    Measure("absolute reading", "Σ_{k∈X} |D[q, k]| ÷ Σ_k |D[q, k]|",
            "The span's share of the row's magnitude, always in [0, 1]: the app's default. For softmax maps "
            "(Llama, Persimmon, DiffLlama's A1 and A2) the three readings are equal."),
    Measure("entropy", "−Σ_k p_k·log p_k, p = |M[i]| ÷ Σ_k |M[i, k]|",
            "How spread a row is (nats), mean over query rows 1..N−1 (row 0 can only attend to itself)."),
    Measure("top-k mass", "sum of the k largest p_k",
            "How concentrated a row is (sparsity), mean over query rows 1..N−1."),
    Measure("first-token mass", "p_0",
            "The share of a row's magnitude on the first token, mean over query rows 1..N−1."),
    Measure("negative mass", "Σ_k max(−M[i, k], 0) ÷ Σ_k |M[i, k]|",
            "The share of a row that subtracts (0 for softmax maps), mean over query rows 1..N−1."),
    Measure("sink score", "α = (1/N)·Σ_i M[i, 0]",
            "The mean attention the first token receives over all N queries, per head and per map (A1, A2 and "
            "D for DiffLlama, the softmax map otherwise), as in Gu et al., ICLR 2025."),
    Measure("sink share", "share of layer × head maps with α > ε, ε = 0.3",
            "How many heads are attention sinks, with Gu et al.'s threshold."),
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
    Measure("retrieval accuracy", "share of inputs whose greedy continuation starts with the answer",
            "Whether a language model actually found the answer, next to its attention numbers."),
    Measure("QA exact match", "share of inputs whose best span equals the answer",
            "The same for an extractive question-answering model."),
    Measure("95 % CI", "2.5th and 97.5th percentiles of the mean over 2000 bootstrap resamples of the examples",
            "How much a study's mean would move with other inputs of the same kind; n is the number of examples."),
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


def markdown(*names: str) -> str:
    """The definitions of ``names`` (all when none) as a Markdown list."""
    return "\n".join(f"- {MEASURES[name].text}" for name in names or MEASURES)
