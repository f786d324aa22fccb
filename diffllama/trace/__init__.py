"""The trace engine: one forward pass, any layer's attention maps later (``lazy.Trace``).

Modules: ``hooks`` (the attention function transformers calls, and the re-run of a layer),
``architectures`` (one adapter per architecture), ``lambdas`` (DiffLlama's λ), ``projections``
(queries and values by the layer's own modules), ``blocks`` (scheduling and logits), ``cache``,
``pooling``, ``contributions``, ``forward`` (the pass) and ``decoding`` (token offsets)."""

from .architectures import ARCHITECTURES, Architecture, AttentionShape, architecture_of
from .blocks import BLOCK_ROWS, Block, block_values
from .cache import LayerCache
from .decoding import IncrementalDecoder, decoded_offsets
from .forward import run_trace, task_logits, trace_encoding, trace_ids
from .hooks import ATTENTION_IMPLEMENTATION, INTERVENTION, LambdaOverride, lens_attention
from .lazy import Trace
from .pooling import OVERVIEW_LOGITS, PooledMap, block_edges, pool_columns, sample_rows

__all__ = ["ARCHITECTURES", "ATTENTION_IMPLEMENTATION", "INTERVENTION", "Architecture", "AttentionShape", "BLOCK_ROWS", "Block",
           "IncrementalDecoder", "LambdaOverride", "LayerCache", "OVERVIEW_LOGITS", "PooledMap", "Trace",
           "architecture_of", "block_edges", "block_values", "decoded_offsets", "lens_attention",
           "pool_columns", "run_trace", "sample_rows", "task_logits", "trace_encoding", "trace_ids"]
