"""Token heat: one query token's attention row drawn on the input text, A and B side by side, with a
legend that says what full colour means.

A row of a differential map can be negative, so the heat is signed: a score s in [-1, 1] is drawn red
(s > 0) or purple (s < 0) with opacity |s|. Scores are the row's values divided by the scale the legend
names: each model's own largest |value|, or one scale for both.

The heat is one HTML string, not a ``gr.HighlightedText`` list of pieces: after every event the page
copies every output's value, and a list of thousands of tokens per model made that copying most of the
time of each view clicked afterwards.

A click on a token makes it the query (``panel.picking``): each token's span carries its position."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr
import numpy as np

from diffllama import analysis
from diffllama.tokens import display_token

from . import figures, run_store
from .errors import user_errors
from .safe_text import for_html, markdown_code

NEGATIVE, POSITIVE = "rgb(128, 90, 213)", "rgb(239, 68, 60)"  # colours of scores < 0 and > 0 (as gradio's HighlightedText)
LAST = -1  # query position meaning "the last real (non-special) token of each model's input"
WHOLE_UP_TO = 300  # tokens: a row this long is drawn whole; a longer one opens around its query and strongest keys
STRONGEST = 5  # keys of largest |value| a long row opens around ...
STRONG = 0.1  # ... of those at least this share of the row's largest |value| (not the background's ties)
CONTEXT = 12  # tokens shown either side of the query and of each strongest key


def last_real_token(trace) -> int:
    real = [i for i, sequence in enumerate(trace.sequence_ids) if sequence is not None]
    return real[-1] if real else trace.seq_len - 1


def positioned_pieces(trace, texts: dict[int, str], values: np.ndarray, upto: int, scale: float) -> list:
    """(token position, text, score or None) pieces: the input up to token ``upto``, each token scored
    value / scale (clipped to [-1, 1]). Text between tokens stays unmarked and belongs to the token
    after it; special tokens appear by name (⟨s⟩); a sequence without its text in ``texts`` (a QA
    question) is drawn from its decoded tokens."""
    pieces, cursor = [], {}
    for i in range(upto + 1):
        score = round(float(np.clip(values[i] / scale, -1, 1)), 4)
        sequence, (start, end) = trace.sequence_ids[i], trace.offsets[i]
        text = texts.get(sequence)
        if sequence is None or text is None:
            pieces.append((i, display_token(trace.tokens[i], True) if sequence is None else trace.tokens[i], score))
            continue
        if sequence not in cursor:  # a window of a long text starts inside it: say so, draw only the window
            cursor[sequence] = start
            if start > 0:
                pieces.append((i, "… ", None))
        at = cursor[sequence]
        if end <= start or start < at:  # a token without characters of its own (or overlapping the previous)
            continue
        if start > at:
            pieces.append((i, text[at:start], None))
        pieces.append((i, text[start:end], score))
        cursor[sequence] = end
    return pieces


def heat_pieces(trace, texts: dict[int, str], values: np.ndarray, upto: int, scale: float) -> list:
    """(text, score or None) pieces of ``positioned_pieces``."""
    return [(text, score) for _, text, score in positioned_pieces(trace, texts, values, upto, scale)]


def _span(text: str, score: float | None, mark: bool = False, position: int | None = None) -> str:
    """One piece on red (score > 0) or purple (< 0) at opacity |score|, its score on hover; the text
    escaped (it is the visitor's input); ``mark``: outlined (the query token); ``position``: the
    token's, which a click on it selects (``figures.CLICK_SELECT_JS``)."""
    if score is None:
        return for_html(text)
    colour = (POSITIVE if score >= 0 else NEGATIVE).replace("rgb(", "rgba(").replace(")", f", {abs(score):.3f})")
    outline = ";outline:2px solid #212529" if mark else ""
    if position is None:
        return f'<span style="background:{colour}{outline}" title="{score:+.4f}">{for_html(text)}</span>'
    return (f'<span data-index="{position}" style="background:{colour}{outline};cursor:pointer" '
            f'title="token {position}: {score:+.4f} — click to make it the query">{for_html(text)}</span>')


def heat_html(pieces: list) -> str:
    """``heat_pieces`` as HTML (``_span``)."""
    return f'<div class="heat">{"".join(_span(text, score) for text, score in pieces)}</div>'


def focus(values: np.ndarray, query: int, strongest: int = STRONGEST, context: int = CONTEXT) -> tuple[list[int], list]:
    """The ``strongest`` keys (largest |value|, first position first on ties; none under ``STRONG``
    of the largest) and the merged token ranges ``[start, end)`` of ``context`` tokens either side of
    them and of the query."""
    size = np.abs(values[: query + 1])
    top = sorted(p for p in np.argsort(-size, kind="stable")[:strongest].tolist() if size[p] >= STRONG * size.max())
    ranges = sorted((max(0, p - context), min(query + 1, p + context + 1)) for p in {query, *top})
    merged = [ranges[0]]
    for start, end in ranges[1:]:
        if start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return top, merged


def focused_html(pieces: list, query: int, strongest: list[int], ranges: list) -> str:
    """``positioned_pieces`` within ``ranges`` only, each gap between them named by its length, the
    query outlined: the heat opens where the query and its strongest keys are, however long the input."""
    gap = lambda tokens: f'<span class="heat-gap" style="color:#868e96"> ⋯ {tokens} tokens ⋯ </span>'  # noqa: E731
    parts, shown = [], 0
    for start, end in ranges:
        parts.append(gap(start - shown) if start > shown else "")
        parts += [_span(text, score, position == query, position) for position, text, score in pieces if start <= position < end]
        shown = end
    parts.append(gap(query + 1 - shown) if shown < query + 1 else "")
    keys = ", ".join(map(str, strongest))
    keys_named = "the key" if len(strongest) == 1 else f"the {len(strongest)} keys"
    note = (f'<div style="font-size:0.85em;color:#495057">around query token {query} (outlined) and {keys_named} '
            f"of largest |value| ({keys}), {CONTEXT} tokens either side</div>")
    return f'{note}<div class="heat">{"".join(parts)}</div>'


def heat_view(trace, texts: dict[int, str], row: HeatRow, scale: float) -> str:
    """A row's heat: the whole input when short; a long one (over ``WHOLE_UP_TO`` tokens) opens
    around the query and its strongest keys (``focus``), the whole input behind an expander."""
    pieces = positioned_pieces(trace, texts, row.values, row.query, scale)
    whole = f'<div class="heat">{"".join(_span(text, score, i == row.query, i) for i, text, score in pieces)}</div>'
    if row.query + 1 <= WHOLE_UP_TO:
        return whole
    strongest, ranges = focus(row.values, row.query)
    return (focused_html(pieces, row.query, strongest, ranges)
            + f"<details><summary>the whole input ({row.query + 1} tokens)</summary>{whole}</details>")


@dataclass
class HeatRow:
    """One model's attention row: which token and layer it is, and its values over keys 0..query."""

    slot: str
    query: int
    layer: int
    values: np.ndarray  # [query + 1]


def heat_rows(traces: dict, layer: int | None, position: int, value: str = "weight") -> dict[str, HeatRow]:
    """Each model's row (mean over heads, the model's own map kind: its weights, or its keys'
    contributions, ``value``) at ``layer`` (None: its middle layer) for the token at ``position``
    (``LAST``: its last real token); both are clamped to the model."""
    rows = {}
    for slot, trace in traces.items():
        query = last_real_token(trace) if position == LAST else min(max(int(position), 0), trace.seq_len - 1)
        at = trace.num_layers // 2 if layer is None else min(int(layer), trace.num_layers - 1)
        values = analysis.attention_row(trace, at, None, trace.kinds[0], query, value)[: query + 1]
        rows[slot] = HeatRow(slot, query, at, values)
    return rows


def heat_scales(rows: dict[str, HeatRow], shared: bool) -> dict[str, float]:
    """Full colour per model: its own largest |value|, or the largest of both when ``shared``."""
    own = {slot: float(np.abs(row.values).max()) or 1.0 for slot, row in rows.items()}
    return {slot: max(own.values()) for slot in own} if shared else own


def legend(rows: dict[str, HeatRow], scales: dict[str, float], value: str = "weight") -> str:
    """The colour bar of the heat, with the value full colour stands for (one, or one per model)."""
    signed = any((row.values < 0).any() for row in rows.values())
    top = max(scales.values())
    colours = [NEGATIVE, "rgba(255, 255, 255, 0)", POSITIVE] if signed else ["rgba(255, 255, 255, 0)", POSITIVE]
    per_model = "" if len(set(scales.values())) == 1 else " · ".join(
        f"{slot}: full colour = {scale:.3g}" for slot, scale in scales.items())
    bar = figures.colour_legend(colours, -top if signed else 0.0, top, "attention" if value == "weight" else
                                figures.VALUE_TITLES[value])
    return bar + (f'<div style="font-size:0.85em">each model on its own scale: {per_model}</div>' if per_model else "")


def caption(trace, row: HeatRow, scale: float, value: str = "weight") -> str:
    token = display_token(trace.tokens[row.query], trace.sequence_ids[row.query] is None)
    maps = "A1 − λ·A2 rows (can be negative)" if trace.kinds[0] == "diff" else "softmax rows"
    if value != "weight":
        maps = f"keys' {figures.VALUE_TITLES[value]} through its {maps.replace(' (can be negative)', '')}"
    return (f"**{row.slot}** ({trace.arch}): query token {row.query} {markdown_code(token)} · layer {row.layer} of "
            f"0–{trace.num_layers - 1} · mean over {trace.num_heads} heads of its {maps} · full colour = {scale:.3g}")


def draw(traces: dict, texts: dict[str, dict[int, str]], layer: int | None, position: int, shared: bool,
         value: str = "weight"):
    """(heat A, heat B, legend, caption A, caption B) for ``traces`` by slot; ``texts[slot]`` maps a
    sequence id to the text its offsets point into; ``value``: weights or contributions."""
    rows = heat_rows(traces, layer, position, value)
    scales = heat_scales(rows, shared)
    heat = {s: heat_view(traces[s], texts[s], r, scales[s]) for s, r in rows.items()}
    captions = {s: caption(traces[s], r, scales[s], value) for s, r in rows.items()}
    return heat.get("A"), heat.get("B"), legend(rows, scales, value), captions.get("A", ""), captions.get("B", "")


def run_texts(run) -> dict[str, dict[int, str]]:
    """For each slot, the texts its trace's offsets point into, by sequence id (QA: question and context)."""
    question = {0: run.question} if run.question is not None else {}
    return {slot: {**question, run.span_sequence: text} for slot, text in run.texts.items()}


@dataclass
class HeatView:
    """The controls and outputs of a tab's token heat."""

    layer: gr.Slider
    position: gr.Slider
    shared: gr.Checkbox
    value: gr.Radio
    outputs: list

    @property
    def texts(self) -> list[gr.HTML]:
        """A's and B's heat, where a click on a token selects it."""
        return self.outputs[:2]

    def redraw_after(self, tab: gr.State, event):
        """Redraw after ``event`` succeeds (a run, a click on a token)."""
        return event.success(refresh, [tab, self.layer, self.position, self.shared, self.value], self.outputs,
                             api_visibility="private")

    def wire(self, tab: gr.State, run_event) -> None:
        """Redraw after the tab's run succeeds and whenever a control changes."""
        inputs, private = [tab, self.layer, self.position, self.shared, self.value], dict(api_visibility="private")
        self.redraw_after(tab, run_event)
        for control in (self.layer, self.position):
            control.release(refresh, inputs, self.outputs, **private)
        for control in (self.shared, self.value):
            control.change(refresh, inputs, self.outputs, **private)


@user_errors
def refresh(tab: str, layer: int, position: int, shared: bool, value: str = "weight", request: gr.Request = None):
    """The heat of the tab's last run, and the query slider sized to its longest input."""
    run = run_store.current(request, tab)
    longest = max(trace.seq_len for trace in run.traces.values())
    return (*draw(run.traces, run_texts(run), int(layer), int(position), bool(shared), value),
            gr.update(maximum=longest - 1))


def build(what: str) -> HeatView:
    """Controls (layer, query token, shared scale), a legend, and A's and B's heat side by side.
    ``what`` says whose row it is by default (e.g. "the pooled (last) token")."""
    with gr.Row():
        layer = gr.Slider(0, 127, value=0, step=1, label="layer (the middle one at first)")
        position = gr.Slider(LAST, 8192, value=LAST, step=1,
                             label=f"query token position (−1: the last real token — {what}); or click a token")
        shared = gr.Checkbox(value=True, label="one colour scale for A and B")
        value = gr.Radio(figures.VALUE_CHOICES, value="weight",
                         label="heat: weight, or what each key adds (contribution)")
    legend_html = gr.HTML()
    with gr.Row():
        with gr.Column():
            caption_a = gr.Markdown()
            heat_a = gr.HTML(label="A: attention row as token heat", js_on_load=figures.CLICK_SELECT_JS)
        with gr.Column():
            caption_b = gr.Markdown()
            heat_b = gr.HTML(label="B: attention row as token heat", js_on_load=figures.CLICK_SELECT_JS)
    return HeatView(layer, position, shared, value, [heat_a, heat_b, legend_html, caption_a, caption_b, position])
