"""Figures for the views, built from plain records and arrays (no model, no torch): attention maps
(``maps``), their colour scales (``scales``), the overview's thumbnails (``overview``), per-layer
charts (``charts``), the provenance stamp (``stamp``) and the scripts that turn clicks on them into
events (``clicks``). The views import this package; its names are the modules' public ones."""

import plotly.colors  # noqa: F401 - ``figures.plotly.colors`` reads the same colours the figures use

from .charts import NOISE_KL, ablation_kl, head_stats_comparison, lambda_profile, qa_logits
from .labels import (KIND_TITLES, MODEL_COLOURS, VALUE_CHOICES, VALUE_TITLES, colour_bar_title, plotly_text, short,
                     signed)
from .maps import (ALL_LABELS, FULL_HEIGHT, attention_figure, attention_heatmap, axis_position, decomposition,
                   future_mask, label_room, masked, region_heatmap, region_limit)
from .clicks import CLICK_SELECT_JS, token_pick_js
from .overview import THUMBNAIL_PIXELS, overview_html, overview_limit, png_data_url, thumbnail
from .plain import plain_figure
from .scales import (DIVERGING, MASKED, ROBUST_PERCENTILE, SEQUENTIAL, ScaleLimit, as_limit, bar_ticks, colour_bar,
                     colour_legend, colour_range, colour_table, robust_limit, scale_legend)
from .stamp import PROVENANCE_FONT, PROVENANCE_LINE, provenance_note, stamp_lines
