"""Every architecture adapter against transformers' eager attention: each map kind of each head, on
MHA and GQA layouts, default and llama3 RoPE, an explicit head_dim, and Persimmon's partial rotary
with qk-LayerNorm; the attention-shape record against the tensors the model really makes; queries of
a few rows against those of every row; a one-row view projects one row."""

from types import SimpleNamespace

import pytest
import torch
import transformers

from diffllama.trace import ARCHITECTURES, architecture_of, trace_ids
from test_contributions import real_head_outputs

TEXT = "The magic number of Lyon is 4821. Anna walked to the old market in Paris."
LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 16}

# case -> (model_type, config overrides): every architecture in MHA and (where it has one) GQA layout
CASES = {
    "diffllama-mha": ("diffllama", dict(num_attention_heads=4, num_key_value_heads=4)),
    "diffllama-gqa-llama3": ("diffllama", dict(num_attention_heads=8, num_key_value_heads=2, rope_parameters=LLAMA3_ROPE)),
    "diffllama-head-dim": ("diffllama", dict(num_attention_heads=4, num_key_value_heads=2, head_dim=16)),
    "llama-mha": ("llama", dict(num_attention_heads=4, num_key_value_heads=4)),
    "llama-gqa-llama3": ("llama", dict(num_attention_heads=8, num_key_value_heads=2, rope_parameters=LLAMA3_ROPE)),
    "llama-head-dim": ("llama", dict(num_attention_heads=4, num_key_value_heads=2, head_dim=16)),
    "persimmon-mha": ("persimmon", dict(num_attention_heads=4, qk_layernorm=True, partial_rotary_factor=0.5)),
}


def expected_maps(model_type: str, maps: torch.Tensor, head: int, lambda_: float | None) -> dict[str, torch.Tensor]:
    """Each map kind of map head ``head`` from eager attention's softmax maps ``maps`` [H, N, N], as
    differential-attention.md states them (not as the adapters compute them)."""
    if model_type == "diffllama":  # head i pairs with i + H/2
        a1, a2 = maps[head], maps[head + maps.shape[0] // 2]
        return {"diff": a1 - lambda_ * a2, "a1": a1, "a2": a2}
    return {"softmax": maps[head]}


def build(case: str, tokenizer, attn_implementation: str):
    model_type, overrides = CASES[case]
    torch.manual_seed(0)
    config = transformers.AutoConfig.for_model(
        model_type, vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        max_position_embeddings=512, initializer_range=0.3, pad_token_id=0, bos_token_id=1, eos_token_id=2, **overrides)
    model_class = getattr(transformers, ARCHITECTURES[model_type].class_prefix + "ForCausalLM")
    model = model_class._from_config(config, attn_implementation=attn_implementation)
    if model_type == "diffllama":  # λ vectors start near zero; spread them so λ differs per layer
        for layer in model.base_model.layers:
            for name in ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2"):
                torch.nn.init.normal_(getattr(layer.self_attn, name), std=0.3)
    return model.eval()


def traced(case: str, tokenizer):
    model = build(case, tokenizer, "lens")
    ids = tokenizer(TEXT)["input_ids"]
    trace = trace_ids(model, tokenizer, CASES[case][0], ids, [(0, 0)] * len(ids), [0] * len(ids))
    return model, trace


def test_every_architecture_has_cases_and_expectations():
    assert {model_type for model_type, _ in CASES.values()} == set(ARCHITECTURES)


@pytest.mark.parametrize("case", list(CASES))
@torch.no_grad()
def test_every_map_kind_equals_eager_attention(case, tokenizer):
    model_type = CASES[case][0]
    model, trace = traced(case, tokenizer)
    eager = build(case, tokenizer, "eager")
    reference = eager(torch.tensor([trace.input_ids]), output_attentions=True)
    torch.testing.assert_close(trace.logits, reference.logits[0], atol=1e-5, rtol=0)
    for layer in range(trace.num_layers):
        maps = reference.attentions[layer][0]  # [H, N, N]
        for head in range(trace.num_heads):
            expected = expected_maps(model_type, maps, head, trace.lambdas[layer] if trace.lambdas else None)
            assert set(expected) == set(trace.kinds)
            for kind, values in expected.items():
                torch.testing.assert_close(trace.attention(layer, head, kind), values, atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", list(CASES))
@torch.no_grad()
def test_the_shape_record_matches_the_tensors_the_model_makes(case, tokenizer):
    model, trace = traced(case, tokenizer)
    shape = architecture_of(model.config).shape
    assert trace.architecture.shape == shape
    n, attn = trace.seq_len, model.base_model.layers[0].self_attn
    assert shape.head_dim == attn.head_dim
    assert trace.keys[0].shape == (shape.kv_heads, n, shape.head_dim)  # the keys the attention function was given
    assert trace._queries(0, list(range(n))).shape == (shape.heads, n, shape.head_dim)
    assert trace._values(0).shape == (shape.kv_heads, n, shape.value_width)
    assert trace.num_heads == shape.map_heads == (shape.heads // 2 if CASES[case][0] == "diffllama" else shape.heads)
    projection = trace.architecture.output_projection(attn)
    assert projection.weight.shape[1] == shape.map_heads * shape.value_width
    real = real_head_outputs(SimpleNamespace(model=model), trace)[0]  # what each head feeds the output projection
    for head in range(trace.num_heads):
        mixed = torch.cat([m for _, _, _, m in trace._contribution_blocks(0, head, list(range(n)))])
        torch.testing.assert_close(mixed @ trace._head_projection(0, head).T, real[head], atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", list(CASES))
def test_queries_of_a_few_rows_equal_those_rows_of_every_row(case, tokenizer):
    _, trace = traced(case, tokenizer)
    rows = [0, 3, 4, trace.seq_len - 1]
    few = trace._queries(1, rows)  # computed for these rows alone: nothing is cached yet
    assert trace.cache.lookup(("q", 1)) is None
    every = trace._queries(1, list(range(trace.seq_len)))
    torch.testing.assert_close(few, every[:, rows], atol=1e-6, rtol=0)


def test_a_one_row_view_projects_one_row_per_layer(tokenizer):
    model, trace = traced("diffllama-gqa-llama3", tokenizer)
    projected = []
    for layer in model.base_model.layers:
        layer.self_attn.register_forward_pre_hook(
            lambda module, args, kwargs: projected.append(kwargs["hidden_states"].shape[1]), with_kwargs=True)
    for layer in range(trace.num_layers):
        for head in range(trace.num_heads):
            torch.testing.assert_close(trace.rows(layer, head, "diff", [9])[0], trace.region(layer, head, "diff", (9, 10),
                                                                                           (0, trace.seq_len))[0])
    assert projected == [1] * trace.num_layers  # one query row per layer, shared by its heads and kinds
