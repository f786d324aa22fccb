"""Long tables shown a page at a time (a 2K-token input's per-token table stays light for the page)."""

from __future__ import annotations

import gradio as gr

PAGE_ROWS = 50  # rows shown at once


def page_of(rows: list[list], page: int | None, what: str, unit: str = "rows") -> dict:
    """The Dataframe's update to page ``page`` of ``rows`` (1-based, clamped; None: the first),
    labelled ``what`` and where the page is in the table (``unit``: what a row is, e.g. "tokens")."""
    pages = max(1, -(-len(rows) // PAGE_ROWS))
    page = min(max(int(page or 1), 1), pages)
    shown = rows[(page - 1) * PAGE_ROWS: page * PAGE_ROWS]
    return gr.update(value=shown, label=f"{what}: page {page} of {pages}, {len(rows)} {unit}")
