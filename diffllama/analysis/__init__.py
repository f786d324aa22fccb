"""Analysis over traces, one module per family of measures; each definition is written once in
``measures``. Every function computes only what it is asked for, one head's rows at a time, and
returns a typed record of numpy arrays and plain values.

- ``maps``: display views (one head's map, a query's row, the overview)
- ``passes``: ``scan``, one pass over every layer's maps that several measures read, the layers in worker threads
- ``head_stats``: entropy, top-k mass, first-token mass, negative mass
- ``allocation``: attention to answer vs noise on a reference span from the query token, every reading, λ beside (Table 3)
- ``sinks``: first-token sink scores (one definition for softmax and differential maps, a fixed window) and the share of sink heads
- ``outliers``: exact top-k and median of attention logits and hidden states (Table 5); ``magnitude_counts`` its counting passes
- ``compiled``: the loops numba compiles, compiled at start-up
- ``ablation``: λ ablation
- ``alignment``: characters ↔ tokens, and two tokenisations of one text"""

from ..records import READINGS, VALUES
from . import measures
from .ablation import lambda_ablation
from .alignment import align_tokens, token_spans
from .compiled import compile_loops
from .allocation import (allocation_table, default_query, find_context, find_reference, layer_lambdas, readings,
                         reference_allocation, span_allocation)
from .head_stats import head_stats, row_statistics, top_k_sum
from .maps import MAX_REGION, attention_map, attention_region, attention_row, block_labels, overview, overview_layers
from .outliers import OUTLIER_RANKS, MagnitudeSummary, activation_outliers, outlier_streams
from .passes import scan
from .sinks import SINK_THRESHOLD, SINK_WINDOW, SinkTotals, first_token_shares, sink_scores, sink_table

__all__ = ["OUTLIER_RANKS", "READINGS", "SINK_THRESHOLD", "SINK_WINDOW", "VALUES", "MagnitudeSummary", "SinkTotals", "scan",
           "activation_outliers", "align_tokens", "allocation_table", "default_query", "MAX_REGION", "attention_map", "attention_region",
           "attention_row", "block_labels", "compile_loops", "find_context", "find_reference", "first_token_shares", "head_stats", "lambda_ablation",
           "layer_lambdas", "measures", "outlier_streams", "overview", "overview_layers", "readings",
           "reference_allocation", "row_statistics", "sink_scores", "sink_table", "span_allocation", "token_spans", "top_k_sum"]
