"""Clicks in the page turned into Python events: ``gr.HTML`` has a select event, fired from its
``js_on_load`` script by ``trigger('select', …)``; ``gr.Plot`` has none, so a script in a ``gr.HTML``
beside the maps reads clicks on them and fires that HTML's select event instead."""

from __future__ import annotations

import json

# For a ``gr.HTML``'s ``js_on_load``: a click on an element with ``data-index`` (a thumbnail, a token)
# fires the HTML's select event with that index, and the element's ``data-value`` (else its text).
CLICK_SELECT_JS = """element.addEventListener('click', (event) => {
  const item = event.target.closest('[data-index]');
  if (item) trigger('select', {index: Number(item.dataset.index), value: item.dataset.value ?? item.textContent, selected: true});
});"""

# A click (pointer down and up in one place) on a map's tick label or cell picks a token: a query
# tick or cell its query token, a key tick its key token; the first token of a pooled block. Each map
# carries its blocks' token edges in layout.meta, and its axes count cells (centred on integers).
# The listeners are the page's: a remounted HTML replaces its earlier ones rather than adding more.
_PICK_JS = """const plots = PLOTS, key = 'lensTokenPick' + KEY;
if (window[key]) window[key].forEach(([type, listener]) => document.removeEventListener(type, listener, true));
let down = null;
const inside = (box, x, y) => x >= box.left && x <= box.right && y >= box.top && y <= box.bottom;
const tokenAt = (plot, x, y) => {
  const layout = plot._fullLayout, meta = plot.layout && plot.layout.meta, area = plot.querySelector('.nsewdrag');
  if (!layout || !meta || !meta.row_edges || !area) return null;
  const box = area.getBoundingClientRect();
  const token = (axis, edges, pixels) => {
    const cell = Math.round(axis.p2c(pixels));  // a cell index (the axes may be categories)
    return cell >= 0 && cell < edges.length - 1 ? edges[cell] : null;
  };
  for (const label of plot.querySelectorAll('.xaxislayer-above .xtick text, .yaxislayer-above .ytick text')) {
    const at = label.getBoundingClientRect();
    if (!inside(at, x, y)) continue;
    return label.closest('.ytick') ? token(layout.yaxis, meta.row_edges, (at.top + at.bottom) / 2 - box.top)
                                   : token(layout.xaxis, meta.col_edges, (at.left + at.right) / 2 - box.left);
  }
  return inside(box, x, y) ? token(layout.yaxis, meta.row_edges, y - box.top) : null;
};
const pressed = (event) => { down = [event.clientX, event.clientY]; };
const released = (event) => {
  if (!down || Math.hypot(event.clientX - down[0], event.clientY - down[1]) > 3 || event.target.closest('.modebar')) return;
  for (const id of plots) {
    const plot = document.querySelector(`#${id} .js-plotly-plot`);
    const token = plot && tokenAt(plot, event.clientX, event.clientY);
    if (token !== null && token !== undefined) return trigger('select', {index: token, value: id, selected: true});
  }
};
window[key] = [['pointerdown', pressed], ['pointerup', released]];
window[key].forEach(([type, listener]) => document.addEventListener(type, listener, true));"""


def token_pick_js(name: str, plot_ids: list[str]) -> str:
    """The ``js_on_load`` of the HTML that reads token clicks on the plots ``plot_ids`` (element ids
    of ``gr.Plot``s drawn by ``figures.attention_figure``); ``name``: its tab's, one set of listeners each."""
    return _PICK_JS.replace("PLOTS", json.dumps(plot_ids)).replace("KEY", json.dumps(name))
