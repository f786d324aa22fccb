"""The trace engine against transformers itself: eager ``output_attentions`` and the λ parameters."""

import pytest
import torch
import transformers

import diffllama
from conftest import ARCHS, PREFIX

TEXT = "The magic number of Lyon is 4821. Anna walked to the old market in Paris."


def reference(path, model_type, input_ids, attn_implementation, **kwargs):
    """transformers' own forward pass on a freshly loaded copy of the checkpoint."""
    model = getattr(transformers, PREFIX[model_type] + "ForCausalLM").from_pretrained(path, attn_implementation=attn_implementation)
    with torch.no_grad():
        return model(torch.tensor([input_ids]), **kwargs)


@pytest.mark.parametrize("name", list(ARCHS))
def test_every_map_equals_eager_attentions(checkpoint, name):
    model_type = ARCHS[name][0]
    lens = diffllama.load(checkpoint(name))
    trace = lens.trace(TEXT)
    plain = reference(checkpoint(name), model_type, trace.input_ids, "sdpa")
    torch.testing.assert_close(trace.logits, plain.logits[0], atol=1e-6, rtol=0)  # the very same computation
    eager = reference(checkpoint(name), model_type, trace.input_ids, "eager", output_attentions=True)
    total_heads = lens.config.num_attention_heads
    assert trace.num_heads == (total_heads // 2 if model_type == "diffllama" else total_heads)
    for layer in range(trace.num_layers):
        maps = eager.attentions[layer][0]  # [H, N, N]
        for head in range(trace.num_heads):
            if model_type == "diffllama":
                a1, a2 = maps[head], maps[head + total_heads // 2]
                torch.testing.assert_close(trace.attention(layer, head, "a1"), a1, atol=1e-5, rtol=0)
                torch.testing.assert_close(trace.attention(layer, head, "a2"), a2, atol=1e-5, rtol=0)
                torch.testing.assert_close(trace.attention(layer, head, "diff"), a1 - trace.lambdas[layer] * a2, atol=1e-5, rtol=0)
            else:
                torch.testing.assert_close(trace.attention(layer, head, "softmax"), maps[head], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["diffllama-mha", "diffllama-gqa"])
@torch.no_grad()
def test_lambda_equals_parameter_formula(checkpoint, name):
    lens = diffllama.load(checkpoint(name))
    trace = lens.trace(TEXT)
    for layer, block in enumerate(lens.model.base_model.layers):
        attn = block.self_attn
        expected = (torch.exp((attn.lambda_q1 * attn.lambda_k1).sum()) - torch.exp((attn.lambda_q2 * attn.lambda_k2).sum())
                    + 0.8 - 0.6 * torch.exp(torch.tensor(-0.3 * layer)))
        assert trace.lambdas[layer] == pytest.approx(expected.item(), abs=1e-6)
        assert trace.lambda_inits[layer] == pytest.approx(0.8 - 0.6 * torch.exp(torch.tensor(-0.3 * layer)).item())
    assert len(set(trace.lambdas)) == trace.num_layers  # the fixture spreads λ: a mixed-up layer index would show


@pytest.mark.parametrize("name", list(ARCHS))
def test_map_invariants(checkpoint, name):
    trace = diffllama.load(checkpoint(name)).trace(TEXT)
    n = trace.seq_len
    for layer in range(trace.num_layers):
        for kind in trace.kinds:
            attention = trace.attention(layer, trace.num_heads - 1, kind)
            assert attention.shape == (n, n) and attention.dtype == torch.float32
            assert torch.all(torch.triu(attention, diagonal=1) == 0)
            row_sum = 1 - trace.lambdas[layer] if kind == "diff" else 1.0
            torch.testing.assert_close(attention.sum(-1), torch.full((n,), row_sum), atol=1e-5, rtol=0)
    assert trace.arch != "diffllama" or trace.attention(0, 0, "diff").min() < 0  # differential maps go negative


def test_pooled_map_is_block_mass_of_the_full_map(checkpoint):
    trace = diffllama.load(checkpoint("diffllama-gqa")).trace(TEXT * 3)
    full = trace.attention(1, 2, "diff")
    pooled = trace.pooled(1, 2, "diff", max_size=7)
    assert pooled.is_pooled and len(pooled.edges) == 8 and pooled.edges[-1] == trace.seq_len
    for i, (r0, r1) in enumerate(zip(pooled.edges, pooled.edges[1:])):
        for j, (c0, c1) in enumerate(zip(pooled.edges, pooled.edges[1:])):
            expected = full[r0:r1, c0:c1].sum(1).mean()
            assert pooled.values[i, j].item() == pytest.approx(expected.item(), abs=1e-5)
    unpooled = trace.pooled(1, 2, "diff", max_size=10_000)
    assert not unpooled.is_pooled
    torch.testing.assert_close(unpooled.values, full, atol=1e-6, rtol=0)


def test_trace_memory_is_linear_in_length(checkpoint):
    lens = diffllama.load(checkpoint("diffllama-gqa"))
    short, long = lens.trace("word " * 50), lens.trace("word " * 160)  # 152 and 482 of its 512 positions
    ratio = long.nbytes / short.nbytes
    length_ratio = long.seq_len / short.seq_len
    assert ratio == pytest.approx(length_ratio, rel=0.02)  # quadratic storage would give length_ratio ** 2


def test_tokens_offsets_and_pair(checkpoint):
    lens = diffllama.load(checkpoint("llama-gqa"))
    trace = lens.trace("Where is Anna?", "Anna walked to Paris.")
    assert trace.tokens[0] == "<s>" and trace.offsets[0] == (0, 0) and trace.sequence_ids[0] is None
    texts = {0: "Where is Anna?", 1: "Anna walked to Paris."}
    rebuilt = {0: "", 1: ""}
    for (start, end), seq in zip(trace.offsets, trace.sequence_ids):
        if seq is not None:
            rebuilt[seq] += texts[seq][start:end]
    assert rebuilt[0].replace(" ", "") == texts[0].replace(" ", "")
    assert rebuilt[1].replace(" ", "") == texts[1].replace(" ", "")


def test_bad_indices_and_kinds_are_refused(checkpoint):
    trace = diffllama.load(checkpoint("diffllama-mha")).trace(TEXT)
    with pytest.raises(ValueError, match="kind 'softmax' is not available for diffllama"):
        trace.attention(0, 0, "softmax")
    with pytest.raises(ValueError, match="layer 3 is out of range"):
        trace.attention(3, 0, "diff")
    with pytest.raises(ValueError, match="head 2 is out of range"):
        trace.attention(0, 2, "a1")
    llama = diffllama.load(checkpoint("llama-gqa")).trace(TEXT)
    with pytest.raises(ValueError, match="kind 'diff' is not available for llama"):
        llama.attention(0, 0, "diff")


def test_concurrent_traces_do_not_mix(checkpoint):
    from concurrent.futures import ThreadPoolExecutor

    lens = diffllama.load(checkpoint("diffllama-gqa"))
    texts = [TEXT, "Bob works at Acme Corp since 2019.", TEXT[::-1], "The cat sat on the mat."]
    alone = {text: lens.trace(text).attention(2, 1, "diff") for text in texts}
    with ThreadPoolExecutor(4) as pool:
        traces = list(pool.map(lens.trace, texts * 3))
        maps = list(pool.map(lambda t: t.attention(2, 1, "diff"), traces))
    for text, attention in zip(texts * 3, maps):
        torch.testing.assert_close(attention, alone[text], atol=1e-6, rtol=0)


@pytest.mark.parametrize("task", ["generation", "classification", "qa", "tagging"])
@pytest.mark.parametrize("name", list(ARCHS))
def test_every_task_head_loads_and_traces(checkpoint, name, task):
    if name == "persimmon" and task == "qa":
        with pytest.raises(diffllama.LoadError, match="persimmon has no qa head"):
            diffllama.load(checkpoint(name, "generation"), task="qa")
        return
    lens = diffllama.load(checkpoint(name, task))
    assert (lens.arch, lens.task) == (ARCHS[name][0], task)
    trace = lens.trace("Where is Anna?", "Anna walked to Paris.") if task == "qa" else lens.trace(TEXT)
    expected = {"generation": (trace.seq_len, len(lens.tokenizer)), "classification": (2,),
                "qa": (trace.seq_len, 2), "tagging": (trace.seq_len, 5)}[task]
    assert tuple(trace.logits.shape) == expected
    assert trace.attention(0, 0, trace.kinds[0]).shape == (trace.seq_len, trace.seq_len)


def test_device_and_dtype_auto_on_cpu(checkpoint):
    lens = diffllama.load(checkpoint("llama-gqa"))
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert lens.device.type == expected
    assert lens.model.dtype == (torch.bfloat16 if expected == "cuda" else torch.float32)
    assert lens.model.config._attn_implementation == "lens"
