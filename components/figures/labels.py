"""What the figures call things: map kinds and cell values by name, and text made literal for plotly.

Token labels arrive as plain text (``diffllama.tokens``); plotly reads ``<``, ``>`` and ``&`` in
labels and hover text as markup, so they are escaped here, at plotly's edge."""

from __future__ import annotations

KIND_TITLES = {"diff": "A1 − λ·A2 (differential)", "a1": "A1 (first softmax)", "a2": "A2 (second softmax)",
               "softmax": "softmax"}
VALUE_TITLES = {"weight": "weight", "norm": "contribution ‖c‖", "projection": "contribution along the output"}
VALUE_CHOICES = [(title, value) for value, title in VALUE_TITLES.items()]  # the cell-value toggle's (label, value)
MODEL_COLOURS = {"A": "#4c6ef5", "B": "#f76707"}


def plotly_text(text: str) -> str:
    """Plain text as plotly shows it literally (its labels and hover text read <, > and & as markup)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def short(label: str, width: int = 18) -> str:
    """``label`` cut to ``width`` characters, an ellipsis saying so."""
    return label if len(label) <= width else label[: width - 1] + "…"


def signed(kind: str, value: str = "weight") -> bool:
    """Whether cells of this map can be negative: differential weights, and contributions along the
    head output (a key can push against it); softmax weights and contribution norms cannot."""
    return value == "projection" or (value == "weight" and kind == "diff")


def colour_bar_title(kind: str, value: str = "weight") -> str:
    """Short enough to fit beside a map half the page wide."""
    if value != "weight":
        return {"norm": "‖c‖", "projection": "c · o / ‖o‖"}[value]
    return "A1 − λ·A2" if kind == "diff" else "attention"
