"""Colour scales: which scale a map's cells take, where full colour sits, the colour bar's ticks,
and colour legends as HTML.

Full colour sits at a high percentile of the cells' |values| (``robust_limit``), not at the largest
one: a single extreme cell (row 0 of a differential map, whose one key carries 1 − λ, up to 2.4)
would otherwise leave every other cell near white. Cells beyond it are drawn at full colour, and
every figure says where full colour sits, why, and how large the largest cell is."""

from __future__ import annotations

import functools
import math

import numpy as np
import plotly.colors

from .labels import signed

SEQUENTIAL = "Viridis"
DIVERGING = "RdBu_r"  # differential maps go negative: blue below 0, red above, white at 0
MASKED = "#c4c4c4"  # a masked (future) key: nothing can attend there, which is not the same as attending 0
# written out (plotly.js knows neither "RdBu_r" nor any reversed name): figures go out unvalidated
COLOUR_SCALES = {name: plotly.colors.get_colorscale(name) for name in (SEQUENTIAL, DIVERGING)}
ROBUST_PERCENTILE = 99.0  # full colour at this percentile of |value| ...
PEAK_MARGIN = 1.25  # ... unless the largest |value| is within this factor of it: then at the largest, nothing clipped


class ScaleLimit(float):
    """Full colour's |value| (a float, as a colour range takes it) and how it was chosen: ``peak`` is
    the largest |value| drawn, ``percentile`` the percentile of |values| (of the cells ``basis``
    names) the limit is (None: the limit is the peak, or was given), ``beyond`` how many cells
    exceed it (drawn at full colour). Put ``float(limit)`` into figures: JSON encoders refuse float
    subclasses."""

    def __new__(cls, limit: float, peak: float | None = None, percentile: float | None = None, beyond: int = 0,
                basis: str = ""):
        self = super().__new__(cls, limit)
        self.peak = float(limit) if peak is None else float(peak)
        self.percentile, self.beyond, self.basis = percentile, int(beyond), basis
        return self

    @property
    def saturated(self) -> bool:
        return self.beyond > 0

    def describe(self, negative: bool, breaks: str = "; ") -> str:
        """Where full colour sits, why, and what is clipped: a legend's or a subtitle's words (a
        clipped scale's in two parts, joined by ``breaks``)."""
        at = f"±{self:.3g}" if negative else f"{self:.3g}"
        if self.percentile is None:
            return f"full colour at {at}" + (" (the largest |value|)" if self.peak == float(self) else "")
        cells = "1 cell" if self.beyond == 1 else f"{self.beyond} cells"
        return (f"full colour at {at} = the {self.percentile:g}th percentile of |value|{self.basis}{breaks}"
                f"{cells} beyond it (up to {self.peak:.3g}) drawn at full colour")


def robust_limit(*arrays: np.ndarray, percentile: float = ROBUST_PERCENTILE, off_diagonal: bool = False) -> ScaleLimit:
    """Where full colour sits for the finite cells of ``arrays`` together (masked cells are NaN):
    the ``percentile`` of their |values|, or their largest |value| when that is within
    ``PEAK_MARGIN`` of it (nothing would stand out, so nothing is clipped). ``off_diagonal``: the
    percentile of the cells off each map's diagonal: a pooled block's attention to its own tokens
    (local attention, and row 0's 1 − λ) would otherwise set the scale of a long input's map."""
    arrays = [np.abs(np.asarray(a, dtype=np.float64)) for a in arrays]
    cells = np.concatenate([a.ravel() for a in arrays])
    cells = cells[np.isfinite(cells)]
    basis = np.concatenate([a[~np.eye(*a.shape, dtype=bool)] for a in arrays]) if off_diagonal else cells
    basis = basis[np.isfinite(basis)]
    peak = float(cells.max()) if cells.size else 0.0
    limit = float(np.percentile(basis, percentile)) if basis.size else 0.0
    if limit * PEAK_MARGIN >= peak or limit == 0:
        return ScaleLimit(peak or 1.0, peak)
    return ScaleLimit(limit, peak, percentile, int(np.count_nonzero(cells > limit)),
                      " off the diagonal" if off_diagonal else "")


def as_limit(limit: float) -> ScaleLimit:
    """``limit`` as a ``ScaleLimit`` (a given number clips nothing it says)."""
    return limit if isinstance(limit, ScaleLimit) else ScaleLimit(float(limit) or 1.0)


def colour_range(kind: str, limit: float, value: str = "weight") -> dict:
    """Heatmap colour settings: signed cells (``signed``) on a diverging scale centred at 0, the others
    (never negative) on a sequential one from 0."""
    limit = float(limit) or 1.0
    if signed(kind, value):
        return dict(colorscale=COLOUR_SCALES[DIVERGING], zmid=0, zmin=-limit, zmax=limit)
    return dict(colorscale=COLOUR_SCALES[SEQUENTIAL], zmin=0, zmax=limit)


def _step(span: float, count: int) -> float:
    """A round tick step (1, 2, 2.5 or 5 × 10^k) giving about ``count`` ticks over ``span``."""
    raw = span / count
    power = 10.0 ** math.floor(math.log10(raw))
    return min((m * power for m in (1, 2, 2.5, 5, 10)), key=lambda step: abs(math.log(step / raw)))


def bar_ticks(low: float, high: float, clipped: bool = False, count: int = 4) -> tuple[list[float], list[str]]:
    """Colour-bar ticks: both ends and round values between them (none crowding an end); ``clipped``
    ends read "≥ high" (and "≤ low" below 0): cells beyond them share the end colour."""
    step = _step(high - low, count)
    inner = [k * step for k in range(math.ceil(low / step), math.floor(high / step) + 1)]
    values = [low, *(v for v in inner if min(v - low, high - v) > 0.4 * step), high]
    texts = [f"{v + 0.0:.3g}" for v in values]  # + 0.0: never "-0"
    if clipped:
        texts[-1] = f"≥{texts[-1]}"
        texts[0] = f"≤{texts[0]}" if low < 0 else texts[0]
    return values, texts


def colour_bar(kind: str, limit: float, title: str, value: str = "weight") -> dict:
    """A heatmap's colour bar on ``colour_range(kind, limit, value)``, ticked at round values."""
    scale, limit = colour_range(kind, limit, value), as_limit(limit)
    values, texts = bar_ticks(scale["zmin"], scale["zmax"], limit.saturated)
    return dict(title=dict(text=title, side="right"), thickness=12, tickmode="array", tickvals=values, ticktext=texts)


@functools.lru_cache(maxsize=None)  # a few scales, each sampled once (sampling a plotly scale is slow)
def colour_table(kind: str, value: str = "weight") -> np.ndarray:
    """[256, 3] uint8 colours of the map's colour scale (``colour_range``), low to high."""
    samples = plotly.colors.sample_colorscale(colour_range(kind, 1.0, value)["colorscale"], np.linspace(0, 1, 256))
    return np.array([plotly.colors.unlabel_rgb(c) for c in samples]).round().astype(np.uint8)


def colour_legend(colours: list[str], low: float, high: float, title: str, masked: bool = False, note: str = "") -> str:
    """A horizontal colour bar as HTML (numbers only, no user text): ``colours`` from ``low`` to ``high``,
    then ``note`` (how the scale was chosen)."""
    swatch = (f'<span style="display:inline-block;width:14px;height:12px;background:{MASKED};margin:0 4px 0 14px;'
              'vertical-align:middle"></span>masked (future)' if masked else "")
    noted = f'<span style="flex-basis:100%">{note}</span>' if note else ""
    return (f'<div class="lens-legend" style="font-size:0.85em;display:flex;align-items:center;gap:6px;flex-wrap:wrap">'
            f'<span>{title}</span><span>{low:.3g}</span>'
            f'<span style="display:inline-block;width:220px;height:12px;border:1px solid #999;'
            f'background:linear-gradient(to right, {", ".join(colours)})"></span>'
            f'<span>{high:.3g}</span>{swatch}{noted}</div>')


def scale_legend(kind: str, limit: float, title: str, value: str = "weight") -> str:
    """The legend of ``colour_range(kind, limit, value)``, saying where full colour sits and why."""
    scale, limit = colour_range(kind, limit, value), as_limit(limit)
    colours = plotly.colors.sample_colorscale(scale["colorscale"], np.linspace(0, 1, 9))
    return colour_legend(colours, scale["zmin"], scale["zmax"], title, masked=True, note=limit.describe(scale["zmin"] < 0))
