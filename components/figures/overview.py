"""The overview: every layer × head of a model as a thumbnail on one colour scale, all of them in one
piece of HTML (each thumbnail an inline PNG, its caption as text under it), so the page fetches no
file per thumbnail and no label of the page covers a caption.

A click on a thumbnail fires the ``gr.HTML``'s select event with the thumbnail's index, as a
gallery's would: give the component ``js_on_load=CLICK_SELECT_JS`` (``clicks``)."""

from __future__ import annotations

import base64
import io

import numpy as np
import plotly.colors
from PIL import Image

from components.safe_text import for_html

from .maps import future_mask
from .scales import MASKED, ScaleLimit, colour_range, colour_table, robust_limit

THUMBNAIL_PIXELS = 96  # a thumbnail's side on the page
ROW_PIXELS = 1200  # the widest row of thumbnails kept whole (a layer a row); wider ones wrap


def thumbnail(values: np.ndarray, kind: str, limit: float, value: str = "weight") -> np.ndarray:
    """A pooled map [b, b] as a square RGB image [b, b, 3] on the shared scale (``colour_range``),
    future cells grey, values beyond the scale at full colour; a pixel a block (``overview_html`` has
    the browser draw it ``THUMBNAIL_PIXELS`` wide, cells kept sharp)."""
    scale = colour_range(kind, limit, value)
    index = np.clip((values - scale["zmin"]) / (scale["zmax"] - scale["zmin"]) * 255, 0, 255).round().astype(int)
    image = colour_table(kind, value)[index]  # [b, b, 3]
    edges = list(range(values.shape[0] + 1))
    image[future_mask(edges, edges)] = plotly.colors.hex_to_rgb(MASKED)
    return image


def overview_limit(maps) -> ScaleLimit:
    """The one colour-scale limit shared by every thumbnail (``maps[layer][head]``, pooled [b, b]):
    ``robust_limit`` of every head's visible cells off the diagonal, so neither one extreme cell (row
    0 of layer 0, where a differential map holds 1 − λ) nor local attention leaves the other layers blank."""
    edges = list(range(maps[0][0].shape[0] + 1))
    future = future_mask(edges, edges)
    return robust_limit(*(np.where(future, np.nan, m) for row in maps for m in row), off_diagonal=True)


def png_data_url(pixels: np.ndarray) -> str:
    """An RGB image [h, w, 3] as a ``data:`` URL of a PNG."""
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="PNG", compress_level=1)  # small images: speed over bytes
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def overview_html(tiles: list[tuple[np.ndarray, str]], title: str, per_row: int | None = None) -> str:
    """Thumbnails (``(pixels, caption)``, in the order clicks are numbered) under ``title``, ``per_row``
    a row (a model's heads: a layer a row) when that fits ``ROW_PIXELS``, else wrapped to the page's
    width; each drawn square at ``THUMBNAIL_PIXELS`` with sharp cells, centred over its caption, which
    is in its tooltip too. Text is escaped (a title may name a model source)."""
    cells = "".join(
        f'<figure data-index="{i}" data-value="{for_html(caption)}" title="{for_html(caption)}" style="margin:0;cursor:pointer;'
        f'text-align:center"><img src="{png_data_url(pixels)}" alt="{for_html(caption)}" width="{THUMBNAIL_PIXELS}" '
        f'height="{THUMBNAIL_PIXELS}" style="image-rendering:pixelated;border:1px solid #ccc;display:block;margin:0 auto">'
        f'<figcaption style="font-size:0.78em;line-height:1.2">{for_html(caption)}</figcaption></figure>'
        for i, (pixels, caption) in enumerate(tiles))
    columns = per_row if per_row and per_row * (THUMBNAIL_PIXELS + 14) <= ROW_PIXELS else "auto-fill"
    return (f'<div class="lens-overview"><div style="font-weight:600;margin:4px 0">{for_html(title)}</div>'
            f'<div style="display:grid;grid-template-columns:repeat({columns},{THUMBNAIL_PIXELS + 8}px);'
            f'gap:8px 6px">{cells}</div></div>')
