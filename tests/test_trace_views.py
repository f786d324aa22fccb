"""The trace engine's fast paths against the full maps: regions, row-sampled pooling, the overview
one layer at a time, the shared queries/keys cache, and linear-time token offsets."""

import random
import threading

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

import diffllama
from diffllama import analysis, budget
from diffllama.analysis import passes
from diffllama.trace import block_edges, blocks, decoded_offsets, sample_rows

TEXT = "The magic number of Lyon is 4821. Anna walked to the old market in Paris. " * 3


@pytest.fixture(scope="module")
def traces(checkpoint):
    return {name: diffllama.load(checkpoint(name)).trace(TEXT) for name in ("diffllama-gqa", "llama-gqa", "persimmon")}


def count_qk_computations(trace) -> list[int]:
    """Counts, per layer, how often the layer's attention module runs (once per queries/keys computation)."""
    calls = [0] * trace.num_layers
    for layer, block in enumerate(trace._model.base_model.layers):
        block.self_attn.register_forward_pre_hook(lambda *_, layer=layer: calls.__setitem__(layer, calls[layer] + 1))
    return calls


@pytest.mark.parametrize("name", ["diffllama-gqa", "llama-gqa", "persimmon"])
def test_region_is_the_slice_of_the_full_map(traces, name):
    trace = traces[name]
    n = trace.seq_len
    for kind in trace.kinds:
        full = trace.attention(1, trace.num_heads - 1, kind)
        for rows, cols in (((5, 17), (0, 9)), ((n - 7, n), (n - 20, n)), ((3, 9), (4, n))):  # the last crosses the diagonal
            region = trace.region(1, trace.num_heads - 1, kind, rows, cols)
            torch.testing.assert_close(region, full[rows[0]:rows[1], cols[0]:cols[1]], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="a region needs 0 ≤ start < end"):
        trace.region(0, 0, trace.kinds[0], (5, 5), (0, 3))


@pytest.mark.parametrize("limit", [1 << 19, 300])  # the default, and blocks small enough to split heads and rows
def test_map_blocks_cover_every_head_and_row_once(traces, monkeypatch, limit):
    monkeypatch.setattr(blocks, "block_values", lambda device: limit)
    trace = traces["diffllama-gqa"]
    for kind in trace.kinds:
        full = torch.stack([trace.attention(2, head, kind) for head in range(trace.num_heads)])  # [h, N, N]
        seen = torch.zeros(trace.num_heads, trace.seq_len, dtype=torch.int)
        for block in trace.map_blocks(2, kind):
            end = block.values.shape[2]
            assert end == int(block.rows[-1]) + 1  # keys after the block's last row are not computed
            torch.testing.assert_close(block.values, full[block.heads, block.rows, :end], atol=1e-6, rtol=0)
            assert torch.all(full[block.heads, block.rows, end:] == 0)
            seen[block.heads, block.rows] += 1
        assert torch.all(seen == 1)


def test_causal_logits_are_every_finite_logit(traces):
    trace = traces["diffllama-gqa"]
    heads = trace._model.config.num_attention_heads
    full = trace.logit_rows(1, torch.arange(trace.seq_len), list(range(heads)))
    streamed = torch.full_like(full, float("-inf"))
    for block in trace.causal_logits(1):  # row rows[i] reads keys 0..rows[i]: each key's logit once
        for i, row in enumerate(block.rows.tolist()):
            assert torch.all(streamed[block.heads, row, :row + 1] == float("-inf"))
            streamed[block.heads, row, :row + 1] = block.values[:, i, :row + 1]
    assert torch.isfinite(streamed).sum() == heads * trace.seq_len * (trace.seq_len + 1) // 2
    torch.testing.assert_close(streamed, full, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["diffllama-gqa", "llama-gqa"])
def test_pooled_over_sampled_rows_is_the_mean_of_those_rows(traces, name):
    trace = traces[name]
    n, size = trace.seq_len, 6
    edges = block_edges(n, size)
    rows = sample_rows(n, edges, 3)
    assert len(rows) == 3 * size and all(any(a <= r < b for r in rows) for a, b in zip(edges, edges[1:]))
    for kind in trace.kinds:
        sampled, _ = trace.pooled_heads(1, kind, size, rows=rows)
        exact, _ = trace.pooled_heads(1, kind, size, rows=list(range(n)))
        for head in range(trace.num_heads):
            full = trace.attention(1, head, kind)
            torch.testing.assert_close(exact[head], trace.pooled(1, head, kind, size).values, atol=1e-6, rtol=0)
            for i, (r0, r1) in enumerate(zip(edges, edges[1:])):
                in_block = [r for r in rows if r0 <= r < r1]
                for j, (c0, c1) in enumerate(zip(edges, edges[1:])):
                    expected = full[in_block, c0:c1].sum(1).mean()
                    assert sampled[head, i, j].item() == pytest.approx(expected.item(), abs=1e-6)


def test_overview_yields_layer_by_layer_and_names_its_sample(traces):
    trace = traces["diffllama-gqa"]
    assert trace.overview_rows(4) is None  # a short input: every row
    steps = list(analysis.overview_layers(trace, "diff", size=4))
    assert [len(step.maps) for step in steps] == list(range(1, trace.num_layers + 1))
    assert steps[-1].query_rows is None
    np.testing.assert_allclose(steps[-1].maps[2][1], trace.pooled(2, 1, "diff", 4).values.numpy(), atol=1e-6)
    sampled_rows = trace.overview_rows(4, max_logits=trace.seq_len * 40)  # a bound the exact overview exceeds
    assert sampled_rows and len(sampled_rows) < trace.seq_len and sampled_rows == sorted(set(sampled_rows))
    step = next(iter(analysis.overview_layers(trace, "diff", size=4)))
    assert step.maps[0][0].shape == (4, 4)


def test_queries_and_keys_are_computed_once_per_layer(checkpoint):
    trace = diffllama.load(checkpoint("diffllama-gqa")).trace(TEXT)
    calls = count_qk_computations(trace)
    for kind in ("diff", "a1", "a2", "diff"):  # the map view: heatmap and decomposition of one head
        analysis.attention_map(trace, 1, 0, kind, 8)
    analysis.attention_row(trace, 1, None, "diff", 5)
    analysis.overview(trace, "a1", 4)
    analysis.head_stats(trace, "diff")
    trace.region(2, 1, "a2", (3, 9), (0, 9))
    assert calls == [1] * trace.num_layers
    assert trace.cache.nbytes <= trace.cache.max_bytes < trace.nbytes


def test_concurrent_readers_compute_a_layer_once(checkpoint):
    trace = diffllama.load(checkpoint("diffllama-gqa")).trace(TEXT)
    calls = count_qk_computations(trace)
    expected = trace.region(1, 0, "diff", (0, trace.seq_len), (0, trace.seq_len))
    trace.cache = type(trace.cache)(trace.cache.max_bytes)  # empty again
    calls[:] = [0] * trace.num_layers
    start, results = threading.Barrier(6), []

    def read():
        start.wait()
        results.append(trace.attention(1, 0, "diff"))

    threads = [threading.Thread(target=read) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls[1] == 1 and len(results) == 6
    for result in results:
        torch.testing.assert_close(result, expected, atol=0, rtol=0)


def test_cache_bound_is_kept_and_answers_stay_exact(checkpoint, monkeypatch):
    lens = diffllama.load(checkpoint("diffllama-gqa"))
    reference = lens.trace(TEXT)
    monkeypatch.setenv(budget.QK_CACHE_ENV, str(1.5 * reference._qk_bytes() / 1e9))  # room for one layer
    trace = lens.trace(TEXT)
    calls = count_qk_computations(trace)
    with monkeypatch.context() as one_thread:  # layers in turn: which layer is evicted is then fixed
        one_thread.setattr(passes, "scan_workers", lambda trace: 1)
        for _ in range(2):
            stats = analysis.head_stats(trace, "diff")
    assert calls == [2] * trace.num_layers  # nothing kept between the two scans but what fits
    assert trace.cache.nbytes <= trace.cache.max_bytes < reference.cache.max_bytes
    np.testing.assert_allclose(stats.entropy, analysis.head_stats(reference, "diff").entropy, atol=1e-6)
    threaded = analysis.head_stats(trace, "diff")  # layers in worker threads: the same bound, the same answers
    assert trace.cache.nbytes <= trace.cache.max_bytes
    np.testing.assert_array_equal(threaded.entropy, stats.entropy)


# --- token offsets in one pass ----------------------------------------------------------------
def offsets_by_prefix(tokenizer, ids):
    """The definition: each token spans from the previous prefix's decoded end to its own prefix's."""
    special = set(tokenizer.all_special_ids)
    text, offsets = "", []
    for k, token_id in enumerate(ids):
        if token_id in special:
            offsets.append((0, 0))
            continue
        upto = tokenizer.decode(ids[: k + 1], skip_special_tokens=True)
        offsets.append((len(text), len(upto)))
        text = upto
    return text, offsets


def sentencepiece_like_tokenizer() -> PreTrainedTokenizerFast:
    """A metaspace tokenizer whose decoder drops the first token's leading space, as Llama 2's does."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=False)
    tokenizer.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tokenizer.train_from_iterator([TEXT, "Émile drove 3 km to Zürich."], trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>", "<s>", "</s>"]))
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


@pytest.mark.parametrize("which", ["byte-level", "sentencepiece-like"])
def test_decoded_offsets_equal_the_prefix_definition(tokenizer, which):
    tokenizer = tokenizer if which == "byte-level" else sentencepiece_like_tokenizer()
    texts = ["Émile drove 3 km to Zürich on 12 May.", "日本語のテキスト 😀 emoji 👍🏽 done", "  two  spaces, then ascii."]
    sequences = [[tokenizer.bos_token_id] + tokenizer(t, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for t in texts]
    generator = random.Random(0)  # random ids cut characters anywhere (byte-level pieces of one character)
    sequences += [[generator.randrange(len(tokenizer)) for _ in range(150)] for _ in range(10)]
    for ids in sequences:
        assert decoded_offsets(tokenizer, ids) == offsets_by_prefix(tokenizer, ids)


def test_a_copied_trace_starts_with_an_empty_cache_of_the_same_bound(traces):
    import copy

    trace = traces["llama-gqa"]
    trace.pooled(1, 0, "softmax", 4)
    clone = copy.deepcopy(trace)
    assert clone.cache is not trace.cache and clone.cache.nbytes == 0 < trace.cache.nbytes
    assert clone.cache.max_bytes == trace.cache.max_bytes
    torch.testing.assert_close(clone.pooled(1, 0, "softmax", 4).values, trace.pooled(1, 0, "softmax", 4).values)


def test_making_room_never_evicts_what_frees_no_bytes():
    """A result kept with the trace and counted as 0 bytes (its size is counted elsewhere) survives a
    bound that other entries fill, since dropping it would free nothing."""
    from diffllama.trace import LayerCache
    cache = LayerCache(100)
    cache.store(("a",), "layer a", 60)
    cache.store(("kept",), "comparison", 0)
    cache.store(("b",), "layer b", 60)
    assert cache.lookup(("kept",)) == "comparison" and cache.lookup(("b",)) == "layer b" and cache.lookup(("a",)) is None
