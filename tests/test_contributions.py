"""Contribution maps against the model's own forward: each head's keys' contributions add up to what
the head really feeds its output projection."""

import pytest
import torch

import diffllama
from diffllama import analysis
from conftest import ARCHS

TEXT = "The magic number of Lyon is 4821. Anna walked to the old market in Paris."


def real_head_outputs(lens, trace) -> list[torch.Tensor]:
    """Per layer, each head's part of the attention output ``[heads, N, D]`` in the model's own forward:
    the output projection's input (captured by a pre-hook), sliced per head, times that head's columns
    of its weight (no bias: it belongs to no head)."""
    captured = {}
    hooks = []
    for index, layer in enumerate(lens.model.base_model.layers):
        attn = layer.self_attn
        projection = attn.o_proj if hasattr(attn, "o_proj") else attn.dense

        def hook(module, args, index=index):
            captured[index] = args[0][0]  # [N, heads·w]

        hooks.append(projection.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            lens.model(torch.tensor([trace.input_ids]))
    finally:
        for handle in hooks:
            handle.remove()
    outputs = []
    for index, layer in enumerate(lens.model.base_model.layers):
        attn = layer.self_attn
        weight = (attn.o_proj if hasattr(attn, "o_proj") else attn.dense).weight  # [D, heads·w]
        inputs = captured[index]
        width = inputs.shape[1] // trace.num_heads
        outputs.append(torch.stack([inputs[:, h * width:(h + 1) * width] @ weight[:, h * width:(h + 1) * width].T
                                    for h in range(trace.num_heads)]))
    return outputs


@pytest.mark.parametrize("name", list(ARCHS))
@torch.no_grad()
def test_contributions_sum_to_the_heads_real_output(checkpoint, name):
    lens = diffllama.load(checkpoint(name))
    trace = lens.trace(TEXT)
    real = real_head_outputs(lens, trace)
    n = trace.seq_len
    for layer in range(trace.num_layers):
        for head in range(trace.num_heads):
            expected = real[layer][head]  # [N, D]
            vectors = torch.zeros(n, n, expected.shape[1])  # c_ik, built from the factors, for this small N
            projection = trace._head_projection(layer, head)  # [D, w]
            for block, weights, values, mixed in trace._contribution_blocks(layer, head, list(range(n))):
                vectors[block.rows, :weights.shape[1]] = weights[:, :, None] * (values @ projection.T)[None]
                torch.testing.assert_close(mixed @ projection.T, expected[block.rows], atol=1e-5, rtol=0)
            torch.testing.assert_close(vectors.sum(1), expected, atol=1e-5, rtol=0)

            record = trace.contributions(layer, head)
            assert record.rows == list(range(n)) and record.kind == ("diff" if name.startswith("diff") else "softmax")
            norms, projections = torch.from_numpy(record.norms), torch.from_numpy(record.projections)
            assert norms.shape == projections.shape == (n, n)
            torch.testing.assert_close(norms, vectors.norm(dim=-1), atol=1e-5, rtol=1e-5)
            assert bool((norms >= 0).all())
            assert bool((norms.triu(1) == 0).all())  # no key after the query contributes
            size = expected.norm(dim=-1)
            torch.testing.assert_close(torch.from_numpy(record.output_norms), size, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(projections.sum(1), size, atol=1e-5, rtol=1e-5)
            direction = expected / size[:, None]
            torch.testing.assert_close(projections, (vectors * direction[:, None]).sum(-1), atol=1e-5, rtol=1e-5)
            assert bool((projections.abs() <= norms * (1 + 1e-5) + 1e-6).all())  # Cauchy–Schwarz, up to rounding


def test_contributions_of_some_rows_equal_those_rows_of_all(checkpoint):
    trace = diffllama.load(checkpoint("diffllama-gqa")).trace(TEXT)
    whole = trace.contributions(1, 2)
    part = trace.contributions(1, 2, rows=[7, 3, 12])
    assert part.rows == [3, 7, 12]
    for field in ("norms", "projections", "output_norms"):
        torch.testing.assert_close(torch.from_numpy(getattr(part, field)),
                                   torch.from_numpy(getattr(whole, field)[[3, 7, 12]]), atol=1e-6, rtol=0)


def test_contributions_reject_a_head_out_of_range(checkpoint):
    trace = diffllama.load(checkpoint("llama-gqa")).trace(TEXT)
    with pytest.raises(ValueError, match="head 4 is out of range"):
        trace.contributions(0, 4)
    with pytest.raises(ValueError, match="token positions"):
        trace.contributions(0, 0, rows=[trace.seq_len])


@pytest.mark.parametrize("value", ["norm", "projection"])
def test_every_view_of_contributions_reads_the_same_numbers(checkpoint, value):
    """The map view (pooled), zoom, token row and overview with contributions in their cells all come
    from the contribution record: pooled = mean over a block's rows of the sum over its keys."""
    trace = diffllama.load(checkpoint("diffllama-gqa")).trace(TEXT)
    n, field = trace.seq_len, "norms" if value == "norm" else "projections"
    exact = torch.from_numpy(getattr(trace.contributions(2, 1), field))  # [N, N]
    full = analysis.attention_map(trace, 2, 1, "diff", n, value)
    assert full.value == value and not full.pooled
    torch.testing.assert_close(torch.from_numpy(full.values), exact, atol=1e-5, rtol=1e-5)
    pooled = analysis.attention_map(trace, 2, 1, "diff", 4, value)
    edges = pooled.edges
    expected = torch.stack([torch.stack([exact[a:b, c:d].sum(1).mean() for c, d in zip(edges, edges[1:])])
                            for a, b in zip(edges, edges[1:])])
    torch.testing.assert_close(torch.from_numpy(pooled.values), expected, atol=1e-5, rtol=1e-5)
    region = analysis.attention_region(trace, 2, 1, "diff", (3, 9), (1, 6), value)
    torch.testing.assert_close(torch.from_numpy(region.values), exact[3:9, 1:6], atol=1e-5, rtol=1e-5)
    row = analysis.attention_row(trace, 2, 1, "diff", 7, value)
    torch.testing.assert_close(torch.from_numpy(row), exact[7], atol=1e-5, rtol=1e-5)
    overview = analysis.overview(trace, "diff", size=n, value=value)
    assert overview.value == value
    torch.testing.assert_close(torch.from_numpy(overview.maps[2][1]), exact, atol=1e-5, rtol=1e-5)


def test_contributions_need_the_map_the_head_applies(checkpoint):
    trace = diffllama.load(checkpoint("diffllama-gqa")).trace(TEXT)
    with pytest.raises(ValueError, match="alone adds nothing"):
        analysis.attention_map(trace, 0, 0, "a1", 64, "norm")
    with pytest.raises(ValueError, match="unknown cell value"):
        analysis.attention_map(trace, 0, 0, "diff", 64, "mass")
