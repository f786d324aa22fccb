"""Interventions, for differential and standard attention alike, each for one forward pass of one
request and nothing in the model changed (``core`` says how):

- ``lambdas``: λ per layer, set to any value or scaled (DiffLlama)
- ``heads``: head ablation (zero or mean), alone or together, and the map of each head's effect
- ``patching``: activation patching clean → corrupted, per head and per layer × position
- ``lens``: the logit lens at the last position
- ``quantize``: quantized models (torchao through transformers) and a model against its quantized copy

Each reads the answer first (its probability and rank before → after), then the rest."""

from .core import HEAD_MODES, Intervention, answer_id
from .heads import ablate_heads, head_effects
from .lambdas import learned_lambdas, set_lambdas
from .lens import logit_lens
from .patching import activation_patching
from .quantize import SCHEMES, compare_quantized, split_source
from .records import AnswerChange, HeadEffects, InterventionResult, LogitLens, PatchingResult, QuantizationComparison

__all__ = ["HEAD_MODES", "SCHEMES", "AnswerChange", "HeadEffects", "Intervention", "InterventionResult", "LogitLens",
           "PatchingResult", "QuantizationComparison", "ablate_heads", "activation_patching", "answer_id",
           "compare_quantized", "head_effects", "learned_lambdas", "logit_lens", "set_lambdas", "split_source"]
