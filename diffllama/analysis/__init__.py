"""Analysis over traces, one module per family of measures; each definition is written once in
``measures``. Every function computes only what it is asked for, one head's rows at a time, and
returns a typed record of numpy arrays and plain values.

- ``maps``: display views (one head's map, a query's row, the overview)
- ``passes``: ``scan``, one pass over every layer's maps that several measures read, the layers in worker threads
- ``head_stats``: entropy, top-k mass, first-token mass, negative mass
- ``allocation``: attention to answer vs noise on a reference span, three readings (Table 3)
- ``sinks``: first-token sink scores and the share of sink heads
- ``outliers``: exact top-k and median of attention logits and hidden states (Table 5)
- ``ablation``: λ ablation
- ``alignment``: characters ↔ tokens, and two tokenisations of one text"""

from ..records import READINGS, VALUES
from . import measures
from .ablation import lambda_ablation
from .alignment import align_tokens, token_spans
from .allocation import find_reference, readings, reference_allocation, span_allocation
from .head_stats import head_stats, row_statistics, top_k_sum
from .maps import MAX_REGION, attention_map, attention_region, attention_row, block_labels, overview, overview_layers
from .outliers import OUTLIER_RANKS, MagnitudeSummary, activation_outliers, logit_summary, outlier_streams
from .passes import scan
from .sinks import SINK_THRESHOLD, SinkTotals, sink_score, sink_scores

__all__ = ["OUTLIER_RANKS", "READINGS", "SINK_THRESHOLD", "VALUES", "MagnitudeSummary", "SinkTotals", "scan", "activation_outliers", "align_tokens",
           "MAX_REGION", "attention_map", "attention_region", "attention_row", "block_labels", "find_reference", "head_stats", "lambda_ablation",
           "logit_summary", "measures", "outlier_streams", "overview", "overview_layers", "readings", "reference_allocation", "row_statistics",
           "sink_score", "sink_scores", "span_allocation", "token_spans", "top_k_sum"]
