"""Notebook figures: a trace drawn by the app's own figure builders without the app (gradio never
imported), each figure holding exactly the analysis numbers."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import diffllama
from components import figures, notebook
from diffllama import analysis

ROOT = Path(__file__).resolve().parents[1]
TEXT = "The magic number of Lyon is 4821. What is the magic number of Lyon?"
WITHOUT_THE_APP = """
import sys
import diffllama
from components import notebook

diff, llama = (diffllama.load(path).trace(sys.argv[3]) for path in sys.argv[1:3])
figures = [notebook.attention_map(diff, 1, 0), *notebook.decomposition(diff, 1, 0), notebook.overview(llama),
           notebook.region(llama, 1, 1, (2, 6), (0, 6)), notebook.lambda_profile({"A": diff, "B": llama}),
           notebook.head_stats({"A": diff, "B": llama})]
assert all(figure.data for figure in figures)
print(sorted(name for name in sys.modules if name.split(".")[0] in ("gradio", "gradio_client")))
"""


@pytest.fixture(scope="module")
def traces(checkpoint):
    return {name: diffllama.load(checkpoint(name)).trace(TEXT) for name in ("diffllama-gqa", "llama-gqa")}


def masked(values: torch.Tensor) -> np.ndarray:
    """A full map as a figure draws it: future keys NaN."""
    values = values.numpy().astype(np.float32)
    return np.where(np.triu(np.ones(values.shape, bool), 1), np.nan, values)


def test_figures_are_built_without_gradio(checkpoint):
    paths = [str(checkpoint("diffllama-gqa")), str(checkpoint("llama-gqa"))]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", WITHOUT_THE_APP, *paths, TEXT], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_map_and_decomposition_hold_the_trace_values(traces):
    trace = traces["diffllama-gqa"]
    shown = notebook.attention_map(trace, 2, 3)
    np.testing.assert_array_equal(shown.data[0].z, masked(trace.attention(2, 3, "diff")))
    assert f"λ = {trace.lambdas[2]:.3f}" in shown.layout.title.text
    a1, a2, diff = notebook.decomposition(trace, 2, 3)
    for figure, kind in ((a1, "a1"), (a2, "a2"), (diff, "diff")):
        np.testing.assert_array_equal(figure.data[0].z, masked(trace.attention(2, 3, kind)))
    shared = figures.robust_limit(masked(trace.attention(2, 3, "a1")), masked(trace.attention(2, 3, "a2")), off_diagonal=True)
    assert a1.data[0].zmax == a2.data[0].zmax == pytest.approx(shared)  # one scale for A1 and A2
    assert diff.data[0].zmid == 0
    with pytest.raises(ValueError, match="no A1 − λ·A2 decomposition"):
        notebook.decomposition(traces["llama-gqa"], 0, 0)


def test_overview_tiles_every_head_on_one_scale(traces):
    trace = traces["llama-gqa"]
    figure = notebook.overview(trace, size=8)
    view = analysis.overview(trace, "softmax", 8)
    b = len(view.edges) - 1
    tiles = np.asarray(figure.data[0].z)
    assert tiles.shape == (trace.num_layers * b, trace.num_heads * b)
    mask = np.triu(np.ones((b, b), bool), 1)
    for layer in range(trace.num_layers):
        for head in range(trace.num_heads):
            tile = tiles[layer * b:(layer + 1) * b, head * b:(head + 1) * b]
            np.testing.assert_array_equal(tile, np.where(mask, np.nan, view.maps[layer][head]))
    assert figure.data[0].zmax == pytest.approx(figures.overview_limit(view.maps))  # one (robust) scale for every head
    assert list(figure.layout.xaxis.ticktext) == [f"H{h}" for h in range(trace.num_heads)]


def test_lambda_profile_and_head_stats_hold_the_analysis_numbers(traces):
    diff, llama = traces["diffllama-gqa"], traces["llama-gqa"]
    profile = notebook.lambda_profile({"A": diff, "B": llama})
    assert len(profile.data) == 2  # learned and λ_init of the one DiffLlama
    np.testing.assert_allclose(profile.data[0].y, diff.lambdas)
    np.testing.assert_allclose(profile.data[1].y, diff.lambda_inits)
    with pytest.raises(ValueError, match="only DiffLlama learns λ"):
        notebook.lambda_profile({"B": llama})
    stats = notebook.head_stats({"A": diff, "B": llama})
    entropy = [bar for bar in stats.data if bar.xaxis == "x"]  # the first panel, one bar series per model
    np.testing.assert_allclose(entropy[0].y, analysis.head_stats(diff).entropy.mean(axis=1))
    np.testing.assert_allclose(entropy[1].y, analysis.head_stats(llama).entropy.mean(axis=1))


def test_contribution_cells_as_the_app_toggle_shows_them(traces):
    trace = traces["diffllama-gqa"]
    contributions = trace.contributions(1, 2)
    along = notebook.attention_map(trace, 1, 2, value="projection")
    np.testing.assert_allclose(along.data[0].z, masked(torch.from_numpy(contributions.projections)), atol=1e-6)
    assert along.data[0].zmid == 0  # a key can push against the output: a diverging scale
    norms = notebook.overview(traces["llama-gqa"], value="norm")
    assert norms.data[0].zmin == 0 and "contribution ‖c‖" in norms.layout.title.text
